"""edge-only vs sd vs psd (each variant of it) over an emulated link, with vLLM alone (autoregressive, ngram and
draft-model speculative decoding) on the same target as peers, all in one run.

Prints a table of medians over repeats (tokens/s, efficiency against the bound of device_client/efficiency.py,
the round's time by part) and each mode's tokens/s over sd's on the same prompt and repeat (paired), and writes
results/psd_bench.json.  Also measures how much verifying the blocks of 1, 2, 4, 8 and 16 concurrent sessions costs
against one session's (the edge's time per block, arrival to verdict).

    OMP_NUM_THREADS=1 .venv/bin/python bench/psd.py [--rtt-ms 30] [--rate-mbps 20] [--repeats 3] [--engine vllm]
    # the phone/GPU profile, paced at D = 4, over a good and a fading UMi user (docs/benchmarks.md):
    OMP_NUM_THREADS=1 .venv/bin/python bench/psd.py --engine llamacpp --profile profiles/phone-1b-gpu-8b.yaml \
        --dilation 4 --compute-scale 0.05 --trace traces/umi-3x8-s0.npz --no-peers --sessions
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bootstrap import REPO, RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread

from device_client.draft import DraftEngine, LlamaCppDraftEngine
from device_client.efficiency import PARTS
from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from device_client.pacing import PacedDraftEngine
from device_client.speculation import (DEFAULT_PSD_VARIANT, PsdVariant, expected_tokens, per_token_acceptance,
                                       psd_seconds_per_token)
from harness.psd_optimum import gain_ceiling, model_alpha, runs_ceiling
from linkemu.emulator import LinkEmulator
from linkemu.proxy import ProxyThread, ShapingProxy
from linkemu.shaper import FixedShaper
from tandem.models import default_data_dir
from tandem.pacing import Pacer
from tandem.processes import EdgeProcess, vllm_cores
from tandem.profiles import load_profile
from tandem.sampling import SamplingConfig
from tandem.trace_format import ChannelTrace, load_trace
from testbed.metrics import scrape, total
from toolbox.models import convert_gguf_to_hf, prepare_models

plaintext_on_loopback()

PROMPTS = (
    "Explain why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "List some facts about the planet Mars.",
    "How do I bake bread at home?",
)
VARIANTS = ("post", "pre", "branch", "adaptive", "pre+adaptive", "pre+branch+adaptive")
FIGURES = ("tokens_per_s", "per_token_latency_s", "ttft_s", "acceptance_rate", "mean_accepted_length",
           "mean_block_length", "bytes_up_per_block", "bytes_down_per_block", "draft_hidden_fraction", "mean_round_s",
           "mean_edge_verify_s", "efficiency", "bound_s_per_token", "draft_token_s")


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def paired_ratio(runs: list[dict], base: list[dict]) -> dict:
    """tokens/s over the base mode's on the same prompt and repeat: geometric mean with its 95% interval, and the
    ratio of the medians beside it (the two part when the gain varies by prompt)."""
    logs = [math.log(r["tokens_per_s"] / b["tokens_per_s"]) for r, b in zip(runs, base)
            if r["tokens_per_s"] > 0 and b["tokens_per_s"] > 0]
    medians = median_of(runs, "tokens_per_s") / median_of(base, "tokens_per_s") if runs and base else None
    if len(logs) < 2:
        return {"ratio": math.exp(logs[0]) if logs else None, "ci95": None, "pairs": len(logs),
                "ratio_of_medians": medians}
    mean, half = float(np.mean(logs)), 1.96 * float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
    return {"ratio": math.exp(mean), "ci95": [math.exp(mean - half), math.exp(mean + half)], "pairs": len(logs),
            "ratio_of_medians": medians}


def summarize_mode(runs: list[dict], base: list[dict], best_sd: list[dict]) -> dict:
    row = {key: median_of(runs, key) for key in FIGURES} | {"runs": len(runs)}
    timed = [r for r in runs if r.get("breakdown_s")]
    if timed:  # the median share of each part in a request's time, as seconds per token
        row["per_token_s"] = {part: statistics.median(r["breakdown_s"][part] / r["generated_tokens"] for r in timed)
                              for part in PARTS}
    row["vs_sd"] = paired_ratio(runs, base)
    row["vs_best_sd"] = paired_ratio(runs, best_sd)
    return row


def modes_of(args) -> list[str]:
    """edge-only, sd at the draft length (and at each of --sd-lengths: the strongest sd is sd at its best length),
    psd in each variant."""
    sd_lengths = [f"sd@{k}" for k in args.sd_lengths if k != args.draft_length]
    return (["edge-only"] if args.edge_only else []) + ["sd"] + sd_lengths + [f"psd:{v}" for v in args.variants]


def request_of(mode: str, prompt: str, args) -> GenerationRequest:
    kind, _, variant = mode.partition(":")
    kind, _, length = kind.partition("@")
    return GenerationRequest(prompt, kind, args.max_tokens, SamplingConfig(),
                             draft_length=int(length or args.draft_length), ignore_eos=True,
                             psd_variant=PsdVariant.parse(variant or DEFAULT_PSD_VARIANT))


def ceilings(runs: dict[str, list[dict]], draft_length: int) -> dict:
    """What the models allow with the acceptance, draft time and round trip this link showed (sd's rounds), each at
    its best length in 1..draft_length: sd, psd as post-verify bets (the closed form of device_client/speculation.py,
    an approximation), the optimal one-chain psd schedule (harness/psd_optimum.py: the ceiling of every variant but
    branch's second chain), and the bound of perfect overlap, max(k t_draft, round trip) per round.  The models need
    alpha < 1: a link or request with no rejection is read as 0.99."""
    sd = runs["sd"]
    accepted_lengths = [a for r in sd for a in r["accepted_lengths"]]
    block_lengths = [k for r in sd for k in r["block_lengths"]]
    alpha = model_alpha(per_token_acceptance(accepted_lengths, block_lengths))
    draft_s = statistics.median(r["draft_token_s"] for r in sd)
    round_trip = statistics.median(r["mean_round_s"] for r in sd)
    lengths = range(1, draft_length + 1)
    optimal = gain_ceiling(alpha, draft_s, lambda k: round_trip, draft_length)
    sd_best = optimal["sd_s_per_token"]
    post_best = min(psd_seconds_per_token(alpha, k, draft_s, round_trip) for k in lengths)
    overlap_best = min(max(k * draft_s, round_trip) / expected_tokens(alpha, k) for k in lengths)
    # Per prompt and repeat, the optimum at that request's own acceptance, draft time and round trip: its geometric
    # mean is what the paired "vs sd" of a variant can be held to (acceptance varies by prompt).
    paired = [gain_ceiling(model_alpha(a), r["draft_token_s"], lambda k, rt=r["mean_round_s"]: rt,
                           draft_length)["optimal_over_sd"]
              for r in sd if (a := per_token_acceptance(r["accepted_lengths"], r["block_lengths"])) is not None
              and r.get("draft_token_s") and r.get("mean_round_s")]
    # Acceptance in runs: a block's first token accepted with one probability, the next after an accepted one with
    # another (fitted to sd's blocks); the optimum of that model, for the real pair's runs.
    in_runs = runs_ceiling(accepted_lengths, block_lengths, draft_s, lambda k: round_trip, draft_length)
    return {"alpha": alpha, "draft_token_s": draft_s, "round_trip_s": round_trip, "sd_s_per_token": sd_best,
            "psd_post_s_per_token": post_best, "optimal_psd_s_per_token": optimal["optimal_psd_s_per_token"],
            "overlap_bound_s_per_token": overlap_best, "psd_post_over_sd": sd_best / post_best,
            "optimal_over_sd": optimal["optimal_over_sd"], "overlap_bound_over_sd": sd_best / overlap_best,
            "optimal_over_sd_paired": math.exp(statistics.fmean(math.log(g) for g in paired)) if paired else None,
            "optimal_in_runs": in_runs}


def run_modes(address: str, draft: DraftEngine, args) -> dict[str, dict]:
    connection = EdgeConnection(address)
    info = connection.info()
    modes = modes_of(args)
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    # Warm-up (prefix cache, engine paths), not counted.
    generate(connection, draft, GenerationRequest(PROMPTS[0], "psd", 8, SamplingConfig()), info=info)
    for repeat in range(args.repeats):
        for prompt in PROMPTS:
            for mode in modes:  # interleaved, so drifts of the machine hit every mode alike
                result, summary = generate(connection, draft, request_of(mode, prompt, args), info=info)
                results[mode].append(summary | {"accepted_lengths": result.accepted_lengths,
                                                "block_lengths": result.block_lengths})
        print(f"  repeat {repeat + 1}/{args.repeats} done", flush=True)
    connection.close()
    best_sd = max((m for m in modes if m.startswith("sd")), key=lambda m: median_of(results[m], "tokens_per_s"))
    rows = {mode: summarize_mode(runs, results["sd"], results[best_sd]) for mode, runs in results.items()}
    kept = ("tokens_per_s", "elapsed_s", "efficiency", "bound_s_per_token", "acceptance_rate", "rounds",
            "draft_token_s", "mean_round_s", "accepted_lengths", "block_lengths")
    per_run = {mode: [{key: run[key] for key in kept} for run in runs] for mode, runs in results.items()}
    return {"best_sd": best_sd, "rows": rows, "ceilings": ceilings(results, args.draft_length), "runs": per_run}


def concurrent_verify_cost(address: str, prepared, args) -> dict:
    """Median edge time per block (arrival to verdict), n sessions at once against one alone (psd, greedy, direct
    link, each session a device of its own)."""
    drafts = [LlamaCppDraftEngine(prepared.draft_gguf) for _ in range(max(args.sessions))]

    def session(index: int) -> list[float]:
        connection = EdgeConnection(address)
        request = GenerationRequest(PROMPTS[index % len(PROMPTS)], "psd", args.max_tokens, SamplingConfig(),
                                    draft_length=args.draft_length, ignore_eos=True)
        result, _ = generate(connection, drafts[index], request)
        connection.close()
        return result.edge_verify_seconds

    rows = {}
    for n in args.sessions:
        times = []
        for _ in range(args.repeats):
            with ThreadPoolExecutor(n) as pool:
                times += [t for per_session in pool.map(session, range(n)) for t in per_session]
        rows[n] = statistics.median(times)
        print(f"  {n} sessions: {rows[n] * 1000:.1f} ms per block", flush=True)
    return {"verify_s": rows, "vs_one": {n: t / rows[args.sessions[0]] for n, t in rows.items()}}


def trace_pairs(trace: ChannelTrace, given: list[str]) -> dict[str, tuple[int, int]]:
    """The (user, edge) links to measure: as given (NAME=USER:EDGE), else a good and a fading one: of the links up
    in at least 95% of the slots, the highest median spectral efficiency, and the largest spread of it (90th over
    10th percentile: the deepest fades short of outages)."""
    if given:
        pairs = {}
        for item in given:
            name, _, pair = item.partition("=")
            user, _, edge = pair.partition(":")
            pairs[name] = (int(user), int(edge))
        return pairs
    se = trace.se.min(axis=0)  # [T, U, E]: the worse direction
    up = trace.availability() >= 0.95
    median = np.where(up, np.median(se, axis=0), -np.inf)
    spread = np.where(up, np.percentile(se, 90, axis=0) / np.maximum(np.percentile(se, 10, axis=0), 1e-9), -np.inf)
    good = np.unravel_index(int(np.argmax(median)), median.shape)
    fading = np.unravel_index(int(np.argmax(spread)), spread.shape)
    return {"good": (int(good[0]), int(good[1])), "fading": (int(fading[0]), int(fading[1]))}


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


def print_ceilings(c: dict) -> None:
    print(f"closed forms at alpha {c['alpha']:.2f}, {c['draft_token_s'] * 1000:.1f} ms per draft token, round trip "
          f"{c['round_trip_s'] * 1000:.1f} ms (each at its best length): "
          f"sd {c['sd_s_per_token'] * 1000:.1f} ms/token, "
          f"psd betting on full accepts {c['psd_post_s_per_token'] * 1000:.1f} (x{c['psd_post_over_sd']:.2f}), "
          f"optimal psd {c['optimal_psd_s_per_token'] * 1000:.1f} (x{c['optimal_over_sd']:.2f}; at each "
          f"request's own: x{c['optimal_over_sd_paired'] or float('nan'):.2f} geometric mean), "
          f"perfect overlap {c['overlap_bound_s_per_token'] * 1000:.1f} (x{c['overlap_bound_over_sd']:.2f})")
    runs = c.get("optimal_in_runs")
    if runs:
        print(f"acceptance in runs (a block's first token {runs['first_alpha']:.2f}, after an accepted one "
              f"{runs['alpha']:.2f}): sd {runs['sd_s_per_token'] * 1000:.1f} ms/token, optimal psd "
              f"{runs['optimal_psd_s_per_token'] * 1000:.1f} (x{runs['optimal_over_sd']:.2f})")


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'mode':<24} {'tok/s':>6} {'vs sd (95% CI)':>19} {'vs best sd':>10} {'ms/tok':>7} {'bound':>6} "
          f"{'effic':>6} {'accept':>7} {'blk':>5} {'hidden':>7} {'round ms':>9}  per token ms: "
          + " ".join(f"{p:>6}" for p in PARTS))

    def fmt(value, spec, scale=1.0):
        return "-" if value is None else format(value * scale, spec)

    for mode, r in rows.items():
        if "error" in r:
            print(f"{mode:<24} error: {r['error']}")
            continue
        ratio = r.get("vs_sd") or {}
        ci = ratio.get("ci95")
        vs = "-" if ratio.get("ratio") is None else (f"x{ratio['ratio']:.2f}" + (
            f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""))
        parts = r.get("per_token_s") or {}
        best = (r.get("vs_best_sd") or {}).get("ratio")
        print(f"{mode:<24} {fmt(r.get('tokens_per_s'), '6.1f')} {vs:>19} {fmt(best, '10.2f')} "
              f"{fmt(r.get('per_token_latency_s'), '7.1f', 1000)} {fmt(r.get('bound_s_per_token'), '6.1f', 1000)} "
              f"{fmt(r.get('efficiency'), '6.2f')} {fmt(r.get('acceptance_rate'), '7.2f')} "
              f"{fmt(r.get('mean_block_length'), '5.2f')} {fmt(r.get('draft_hidden_fraction'), '7.0%')} "
              f"{fmt(r.get('mean_round_s'), '9.1f', 1000)}  "
              + " ".join(fmt(parts.get(p), '6.1f', 1000) for p in PARTS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "llamacpp"], default="vllm")
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 20.0, 50.0],
                        help="added round-trip times to measure (default 0 20 50)")
    parser.add_argument("--rate-mbps", type=float, default=20.0, help="link rate each way (default 20)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--draft-length", type=int, default=4, help="the longest block (default 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help=f"psd variants to measure beside sd (default: {' '.join(VARIANTS)})")
    parser.add_argument("--edge-only", action="store_true", help="measure edge-only decoding too")
    parser.add_argument("--sd-lengths", type=int, nargs="+", default=[], help="also sd at these draft lengths "
                        "(psd is compared with sd at --draft-length and with the best of these)")
    parser.add_argument("--no-peers", action="store_true", help="skip the vLLM peers")
    parser.add_argument("--sessions", type=int, nargs="*", help="also measure the edge's time per block with this "
                        "many concurrent sessions against the first (default when given bare: 1 2 4 8 16)")
    parser.add_argument("--split-cores", action="store_true",
                        help="pin the edge to core 0 and the device (drafting, link) to core 1, as if they were "
                             "separate machines; by default both share all cores")
    pacing = parser.add_argument_group("hardware pacing", "emulate the profile's phone and edge at dilation D: "
                                       "figures are then in emulated time (docs/testbed.md)")
    pacing.add_argument("--profile", type=Path, help="hardware profile YAML")
    pacing.add_argument("--dilation", type=float, default=4.0, help="D (default 4)")
    pacing.add_argument("--compute-scale", type=float, default=1.0,
                        help="the edge's compute relative to the profile's (the testbed's edges: 0.05 and 0.1)")
    parser.add_argument("--trace", type=Path, help="replace the fixed links by trace-driven ones (--trace-pair, "
                        "default a good and a fading link) at --share, base delay --base-delay-ms")
    parser.add_argument("--trace-pair", action="append", default=[], metavar="NAME=USER:EDGE",
                        help="a link of the trace to measure (repeatable)")
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--base-delay-ms", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "psd_bench.json")
    args = parser.parse_args()
    if args.sessions == []:
        args.sessions = [1, 2, 4, 8, 16]

    data_dir = default_data_dir()
    prepared = prepare_models(data_dir, progress=lambda m: None)
    dilation = args.dilation if args.profile else 0.0
    draft: DraftEngine = LlamaCppDraftEngine(prepared.draft_gguf)
    edge_args = ["--engine", args.engine, "--data-dir", str(data_dir)]
    if args.sessions:  # every concurrent session from this one (plaintext) client, opened at once
        most = str(2 * max(args.sessions))
        edge_args += ["--max-sessions", most, "--max-sessions-per-identity", most, "--open-rate", "1000"]
    pacer = Pacer(dilation)
    if args.profile:  # the phone and the edge paced like the profile's; the link D times slower
        draft = PacedDraftEngine(draft, load_profile(args.profile).device, pacer)
        edge_args += ["--metrics-port", "0", "--profile", str(args.profile), "--dilation", repr(dilation),
                      "--compute-scale", repr(args.compute_scale)]
    stretch = dilation or 1.0
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "clock": "emulated" if dilation else "wall",
                    "links": {}}
    env = {"VLLM_CPU_OMP_THREADS_BIND": vllm_cores(1 if args.split_cores else 2)} if args.engine == "vllm" else {}
    what = f"{args.engine} target" + (f", {args.profile.stem} paced at D={dilation:g}, edge compute x"
                                      f"{args.compute_scale:g}" if args.profile else "")

    print(f"starting the {args.engine} edge...", flush=True)
    with EdgeProcess(edge_args, env=env) as edge:
        if args.split_cores:  # this process is the device: every thread of it onto core 1
            for thread_id in os.listdir("/proc/self/task"):
                os.sched_setaffinity(int(thread_id), {1})
        links: list[tuple[str, str, object]] = []
        if args.trace:
            trace = load_trace(args.trace)
            for name, (user, edge_index) in trace_pairs(trace, args.trace_pair).items():
                emulator = LinkEmulator.single_link(trace, args.trace, edge.address, user, edge_index, args.share,
                                                    args.base_delay_ms, dilation=dilation)
                label = (f"{name}: trace {trace.metadata.scenario} user {user} -> edge {edge_index}, share "
                         f"{args.share:g}, base delay {args.base_delay_ms:g} ms")
                links.append((name, label, emulator.proxies.values()))
        for rtt in [] if args.trace else args.rtt_ms:
            rate = args.rate_mbps * 1e6 / stretch
            shaper = FixedShaper(up_bps=rate, down_bps=rate, one_way_delay_s=stretch * rtt / 2000)
            links.append((f"{rtt:g}ms", f"{rtt:g} ms RTT, {args.rate_mbps:g} Mbit/s",
                          [ShapingProxy.to(edge.address, shaper)]))
        for name, label, proxies in links:
            print(f"link: {label}", flush=True)
            with ProxyThread(*proxies) as link:
                measured = run_modes(link.address, draft, args)
            report["links"][name] = {"link": label} | measured
            print_table(f"{what}, {label} (medians of {args.repeats} repeats x {len(PROMPTS)} prompts, "
                        f"{report['clock']} time; the strongest sd: {measured['best_sd']})", measured["rows"])
            print_ceilings(measured["ceilings"])
        if args.profile:  # a paced run is valid only when every step kept to its emulated time
            metrics = scrape("127.0.0.1", edge.metrics_port)
            report["pacing"] = {"device_steps": pacer.steps, "device_overruns": pacer.overruns,
                                "edge_steps": total(metrics, "tandem_edge_pacing_steps_total"),
                                "edge_overruns": total(metrics, "tandem_edge_pacing_overruns_total")}
            print(f"pacing overruns: device {pacer.overruns}/{pacer.steps}, edge "
                  f"{report['pacing']['edge_overruns']:.0f}/{report['pacing']['edge_steps']:.0f}", flush=True)
        if args.sessions:
            print(f"concurrent verification ({', '.join(map(str, args.sessions))} sessions)...", flush=True)
            report["concurrency"] = concurrent_verify_cost(edge.address, prepared, args)
            print(json.dumps(report["concurrency"]))
    if not args.no_peers and args.engine == "vllm" and not args.profile:
        print("vLLM peers on the same target (no link)...", flush=True)
        report["peers"] = run_peers(prepared, data_dir, draft, args)
        print_table("vLLM alone on the same target", {p["peer"]: p for p in report["peers"]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
