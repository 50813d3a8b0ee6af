"""edge-only vs sd vs psd over an emulated link, with vLLM alone (autoregressive, ngram and draft-model
speculative decoding) on the same target as peers, all in one run.

Prints a table of medians over repeats and writes results/psd_bench.json.  Also measures how much verifying the
blocks of 4 concurrent sessions costs against one session's (the edge's own verify time per block).

    OMP_NUM_THREADS=1 .venv/bin/python bench/psd.py [--rtt-ms 30] [--rate-mbps 20] [--repeats 3] [--engine vllm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bootstrap import REPO, RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread

from device_client.draft import LlamaCppDraftEngine
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from linkemu.emulator import LinkEmulator
from linkemu.proxy import ProxyThread, ShapingProxy
from linkemu.shaper import FixedShaper
from tandem.models import default_data_dir
from toolbox.models import convert_gguf_to_hf, prepare_models
from tandem.processes import EdgeProcess, vllm_cores
from tandem.sampling import SamplingConfig
from tandem.trace_format import load_trace

plaintext_on_loopback()

PROMPTS = (
    "Explain why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "List some facts about the planet Mars.",
    "How do I bake bread at home?",
)
FIGURES = ("tokens_per_s", "per_token_latency_s", "ttft_s", "acceptance_rate", "mean_accepted_length",
           "bytes_up_per_block", "bytes_down_per_block", "draft_hidden_fraction", "mean_round_s",
           "mean_edge_verify_s")


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def run_modes(address: str, draft, args) -> dict[str, dict]:
    connection = EdgeConnection(address)
    info = connection.info()
    results: dict[str, list[dict]] = {"edge-only": [], "sd": [], "psd": []}
    # Warm-up (prefix cache, engine paths), not counted.
    generate(connection, draft, GenerationRequest(PROMPTS[0], "psd", 8, SamplingConfig()), info=info)
    for repeat in range(args.repeats):
        for prompt in PROMPTS:
            for mode in results:  # interleaved, so drifts of the machine hit every mode alike
                request = GenerationRequest(prompt, mode, args.max_tokens, SamplingConfig(),
                                            draft_length=args.draft_length, ignore_eos=True)
                results[mode].append(generate(connection, draft, request, info=info)[1])
        print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)
    connection.close()
    return {mode: {key: median_of(runs, key) for key in FIGURES} | {"runs": len(runs)}
            for mode, runs in results.items()}


def concurrent_verify_cost(address: str, prepared, args) -> dict:
    """Median edge verify time per block: one session alone vs four at once (psd, greedy, direct link)."""
    drafts = [LlamaCppDraftEngine(prepared.draft_gguf) for _ in range(4)]

    def session(index: int) -> list[float]:
        connection = EdgeConnection(address)
        request = GenerationRequest(PROMPTS[index], "psd", args.max_tokens, SamplingConfig(),
                                    draft_length=args.draft_length, ignore_eos=True)
        result, _ = generate(connection, drafts[index], request)
        connection.close()
        return result.edge_verify_seconds

    solo = [t for _ in range(args.repeats) for t in session(0)]
    together = []
    for _ in range(args.repeats):
        with ThreadPoolExecutor(4) as pool:
            together += [t for times in pool.map(session, range(4)) for t in times]
    ratio = statistics.median(together) / statistics.median(solo)
    return {"solo_verify_s": statistics.median(solo), "four_sessions_verify_s": statistics.median(together),
            "ratio": ratio}


def run_peers(prepared, data_dir: Path, draft, args) -> list[dict]:
    draft_hf = prepared.model_dir / "draft-hf"
    if not (draft_hf / "config.json").is_file():
        convert_gguf_to_hf(prepared.draft_gguf, draft_hf, progress=lambda m: print("  " + m, flush=True))
    prompts = [draft.encode_chat(p) for p in PROMPTS]
    peers = []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as prompt_file:
        json.dump(prompts, prompt_file)
        prompt_file.flush()
        for peer in ("vllm-ar", "vllm-ngram", "vllm-draft-model"):
            print(f"  peer {peer}...", flush=True)
            completed = subprocess.run(
                [sys.executable, str(REPO / "bench" / "vllm_peers.py"), "--peer", peer,
                 "--target", str(prepared.target_hf), "--draft-hf", str(draft_hf),
                 "--prompts-json", prompt_file.name, "--max-tokens", str(args.max_tokens),
                 "--repeats", str(args.repeats), "--draft-length", str(args.draft_length)],
                capture_output=True, text=True, env={**os.environ, "VLLM_CPU_OMP_THREADS_BIND": vllm_cores()},
            )
            lines = [line for line in completed.stdout.splitlines() if line.startswith('{"peer"')]
            peers.append(json.loads(lines[-1]) if lines else
                         {"peer": peer, "error": completed.stderr.strip().splitlines()[-1:] or "no output"})
    return peers


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'mode':<18} {'tok/s':>7} {'ms/tok':>7} {'ttft ms':>8} {'accept':>7} {'acc/blk':>8} {'B up/blk':>9} "
          f"{'B dn/blk':>9} {'hidden':>7} {'round ms':>9}")

    def fmt(value, spec, scale=1.0):
        return "-" if value is None else format(value * scale, spec)

    for mode, r in rows.items():
        if "error" in r:
            print(f"{mode:<18} error: {r['error']}")
            continue
        print(f"{mode:<18} {fmt(r.get('tokens_per_s'), '7.1f')} {fmt(r.get('per_token_latency_s'), '7.1f', 1000)} "
              f"{fmt(r.get('ttft_s'), '8.0f', 1000)} {fmt(r.get('acceptance_rate'), '7.2f')} "
              f"{fmt(r.get('mean_accepted_length'), '8.2f')} {fmt(r.get('bytes_up_per_block'), '9.0f')} "
              f"{fmt(r.get('bytes_down_per_block'), '9.0f')} {fmt(r.get('draft_hidden_fraction'), '7.0%')} "
              f"{fmt(r.get('mean_round_s'), '9.1f', 1000)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "llamacpp"], default="vllm")
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 20.0, 50.0],
                        help="added round-trip times to measure (default 0 20 50)")
    parser.add_argument("--rate-mbps", type=float, default=20.0, help="link rate each way (default 20)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--draft-length", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="skip the vLLM peers")
    parser.add_argument("--split-cores", action="store_true",
                        help="pin the edge to core 0 and the device (drafting, link) to core 1, as if they were "
                             "separate machines; by default both share all cores")
    parser.add_argument("--trace", type=Path, help="replace the fixed links by one trace-driven link (user "
                        "--trace-user to edge --trace-edge at --share, base delay --base-delay-ms)")
    parser.add_argument("--trace-user", type=int, default=0)
    parser.add_argument("--trace-edge", type=int, default=0)
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--base-delay-ms", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "psd_bench.json")
    args = parser.parse_args()

    data_dir = default_data_dir()
    prepared = prepare_models(data_dir, progress=lambda m: None)
    draft = LlamaCppDraftEngine(prepared.draft_gguf)
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "links": {}}
    env = {"VLLM_CPU_OMP_THREADS_BIND": vllm_cores(1 if args.split_cores else 2)} if args.engine == "vllm" else {}

    print(f"starting the {args.engine} edge...", flush=True)
    with EdgeProcess(["--engine", args.engine, "--data-dir", str(data_dir)], env=env) as edge:
        if args.split_cores:  # this process is the device: every thread of it onto core 1
            for thread_id in os.listdir("/proc/self/task"):
                os.sched_setaffinity(int(thread_id), {1})
        if args.trace:
            trace = load_trace(args.trace)
            emulator = LinkEmulator.single_link(trace, args.trace, edge.address, args.trace_user, args.trace_edge,
                                                args.share, args.base_delay_ms)
            label = (f"trace {trace.metadata.scenario} user {args.trace_user} -> edge {args.trace_edge}, share "
                     f"{args.share:g}, base delay {args.base_delay_ms:g} ms")
            print(f"link: {label}", flush=True)
            with ProxyThread(*emulator.proxies.values()) as link:
                rows = run_modes(link.address, draft, args)
            report["links"]["trace"] = {"link": label, "rows": rows}
            print_table(f"{args.engine} target, {label} (medians of {args.repeats} repeats x {len(PROMPTS)} "
                        "prompts)", rows)
        for rtt in [] if args.trace else args.rtt_ms:
            rate = args.rate_mbps * 1e6
            shaper = FixedShaper(up_bps=rate, down_bps=rate, one_way_delay_s=rtt / 2000)
            print(f"link: {rtt:g} ms RTT, {args.rate_mbps:g} Mbit/s", flush=True)
            with ProxyThread(ShapingProxy.to(edge.address, shaper)) as link:
                rows = run_modes(link.address, draft, args)
            report["links"][f"{rtt:g}ms"] = rows
            print_table(f"{args.engine} target, {rtt:g} ms RTT, {args.rate_mbps:g} Mbit/s "
                        f"(medians of {args.repeats} repeats x {len(PROMPTS)} prompts)", rows)
        print("concurrent verification (4 sessions vs 1)...", flush=True)
        report["concurrency"] = concurrent_verify_cost(edge.address, prepared, args)
        print(json.dumps(report["concurrency"]))
    if not args.no_peers and args.engine == "vllm":
        print("vLLM peers on the same target (no link)...", flush=True)
        report["peers"] = run_peers(prepared, data_dir, draft, args)
        print_table("vLLM alone on the same target", {p["peer"]: p for p in report["peers"]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
