"""`tandem demo`: the whole data plane end to end on this machine, with a latency summary.

Prepares the models, generates (once, cached in the data dir) a Sionna UMi channel trace, starts an edge server,
puts the trace-driven link emulator between device and edge (or a fixed RTT and rate with --fixed-link), generates
answers to a few prompts in every mode, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tandem.cli_support import EXIT_OK

PROMPTS = (
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about the sea.",
    "Give three tips for learning a new language.",
)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["vllm", "llamacpp"], default="vllm", help="edge target engine")
    parser.add_argument("--data-dir", type=Path, help="where models are prepared (default ~/.cache/tandem)")
    parser.add_argument("--trace", type=Path, help="channel trace for the link (default: a UMi trace generated "
                                                   "once into <data-dir>/traces/demo-umi.npz)")
    parser.add_argument("--share", type=float, default=0.25, help="the device's bandwidth share (default 0.25)")
    parser.add_argument("--base-delay-ms", type=float, default=15.0, help="one-way base delay (default 15 ms)")
    parser.add_argument("--fixed-link", action="store_true", help="fixed RTT and rate instead of a trace")
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="fixed link: round-trip time (default 30 ms)")
    parser.add_argument("--rate-mbps", type=float, default=20.0, help="fixed link: rate each way (default 20)")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per answer (default 48)")
    parser.add_argument("--draft-length", type=int, default=4, help="tokens per drafted block (default 4)")
    parser.add_argument("--json-out", type=Path, help="also write every generation's figures here")


def run_demo(args: argparse.Namespace) -> int:
    from device_client.draft import LlamaCppDraftEngine
    from device_client.generate import GenerationRequest, generate
    from device_client.link import EdgeConnection
    from linkemu.proxy import ProxyThread, ShapingProxy
    from linkemu.shaper import FixedShaper
    from tandem.models import default_data_dir, prepare_models
    from testbed.processes import EdgeProcess
    from tandem.sampling import SamplingConfig

    data_dir = args.data_dir or default_data_dir()
    prepared = prepare_models(data_dir)
    print(f"starting the {args.engine} edge server (vLLM takes about a minute on CPU)...", flush=True)
    edge_args = ["--engine", args.engine, "--data-dir", str(data_dir)]
    rows = []
    with EdgeProcess(edge_args) as edge:
        if args.fixed_link:
            rate = args.rate_mbps * 1e6
            proxy = ShapingProxy.to(edge.address, FixedShaper(rate, rate, args.rtt_ms / 2000))
            description = f"{args.rtt_ms:g} ms RTT, {args.rate_mbps:g} Mbit/s"
        else:
            proxy, description = _trace_proxy(args, data_dir, edge.address)
        with ProxyThread(proxy) as link:
            print(f"edge at {edge.address}; device link via {link.address} ({description})\n", flush=True)
            draft = LlamaCppDraftEngine(prepared.draft_gguf)
            connection = EdgeConnection(link.address)
            info = connection.info()
            for prompt in PROMPTS:
                print(f"> {prompt}")
                for mode in ("edge-only", "sd", "psd"):
                    request = GenerationRequest(prompt, mode, args.max_tokens, SamplingConfig(),
                                                draft_length=args.draft_length)
                    result, summary = generate(connection, draft, request, info=info)
                    rows.append(summary | {"prompt": prompt})
                    if mode == "psd":
                        print("  " + summary["text"].strip().replace("\n", "\n  "))
                print()
            connection.close()
    _print_table(rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    return EXIT_OK


# With a static association (no controller yet) a moving user can lose its edge for a while: the demo waits.
OUTAGE_LIMIT_S = 60.0


def _trace_proxy(args: argparse.Namespace, data_dir: Path, edge_address: str):
    """A trace-driven link for the user-edge pair of the trace that is up in the most slots."""
    import numpy as np

    from linkemu.emulator import LinkEmulator
    from tandem.traces.format import load_trace, save_trace
    from tandem.traces.generate import TraceRequest, generate_trace
    from tandem.traces.scenario import load_scenario

    path = args.trace or data_dir / "traces" / "demo-umi.npz"
    if not path.exists():
        print(f"generating a Sionna UMi trace (3 edges x 4 users x 300 slots of 100 ms) into {path}...", flush=True)
        save_trace(generate_trace(TraceRequest(load_scenario(None, "umi"), 3, 4, 300, 100.0, 0)), path)
    trace = load_trace(path)
    user, edge = trace.most_reliable_pair()
    emulator = LinkEmulator.single_link(trace, path, edge_address, user, edge, args.share, args.base_delay_ms,
                                        outage_limit_s=OUTAGE_LIMIT_S)
    rate = trace.rate_bps("down", user, edge, args.share) / 1e6
    outage = 1 - trace.availability()[user, edge]
    return next(iter(emulator.proxies.values())), (
        f"trace {trace.metadata.scenario}, user {user} -> edge {edge}, share {args.share:g}: downlink median "
        f"{np.median(rate):.1f} Mbit/s, outage in {outage:.0%} of slots, base delay {args.base_delay_ms:g} ms "
        "each way")


def _print_table(rows: list[dict]) -> None:
    print(f"{'mode':<10} {'tok/s':>7} {'ms/token':>9} {'ttft ms':>8} {'accept':>7} {'acc/blk':>8} "
          f"{'B up/blk':>9} {'hidden':>7}")
    for mode in ("edge-only", "sd", "psd"):
        runs = [r for r in rows if r["mode"] == mode]

        def cell(key: str, spec: str, scale: float = 1.0) -> str:
            """The median of one figure over the prompts, formatted; '-' where the mode has none."""
            values = [r[key] for r in runs if r[key] is not None]
            return format(statistics.median(values) * scale, spec) if values else format("-", ">" + spec.split(".")[0])

        print(f"{mode:<10} {cell('tokens_per_s', '7.1f')} {cell('per_token_latency_s', '9.1f', 1000)} "
              f"{cell('ttft_s', '8.0f', 1000)} {cell('acceptance_rate', '7.2f')} "
              f"{cell('mean_accepted_length', '8.2f')} {cell('bytes_up_per_block', '9.0f')} "
              f"{cell('draft_hidden_fraction', '7.0%')}")
    print("(medians over the prompts; greedy verification is lossless: every mode emits the target's argmax tokens)")
