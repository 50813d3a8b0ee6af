"""`tandem demo` (the README's main job): the testbed up on the shipped scenario, the same workload under a few
policies swapped live through the admin CLI, a latency table per policy, everything torn down.

Every phase replays the same seeded workload (same arrivals, same prompts) from a fresh device fleet while the
edges, the link emulator and the controller keep running; between phases `tandem policy set` swaps the
controller's policy, as an operator would.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, fail
from testbed.config import DEFAULT_CONFIG, load_testbed_config
from testbed.phases import print_table, run_phase

DEFAULT_POLICIES = ("max-sinr-equal", "tma-opt")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="testbed YAML (deploy/testbed.yaml)")
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), metavar="NAME",
                        help=f"policies to compare, in order (default {' '.join(DEFAULT_POLICIES)})")
    parser.add_argument("--phase-s", type=float, default=12.0, help="emulated seconds of arrivals per policy "
                        "(default 12; real time is D times longer)")


def run_demo(args: argparse.Namespace) -> int:
    from tandem.models import default_data_dir, prepare_models
    from testbed.bed import Testbed
    from testbed.processes import DaemonFailed

    if not args.phase_s > 0:
        return fail("--phase-s must be positive", EXIT_USAGE)
    try:
        prepare_models(default_data_dir())
        bed = Testbed(load_testbed_config(args.config))
    except (UsageError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    print(f"testbed {bed.scenario.name}: {len(bed.scenario.edges)} {bed.config.engine} edges, "
          f"{len(bed.scenario.user_ids())} devices, profile {bed.profile.name} paced at dilation {bed.dilation:g}; "
          f"run folder {bed.run_dir}", flush=True)
    rows = []
    try:
        bed.up(devices=False)
        for policy in args.policies:
            rows.append(run_phase(bed, policy, args.phase_s).summary)
    except DaemonFailed as error:
        return fail(str(error), EXIT_FAILED)
    except UsageError as error:
        return fail(str(error), EXIT_USAGE)
    finally:
        print("tearing the testbed down...", flush=True)
        bed.down()
    print_table(rows)
    out = bed.run_dir / "demo.json"
    out.write_text(json.dumps(rows, indent=2))
    plot = plot_latencies(rows, bed.run_dir / "demo-latency.png")
    print(f"\nper-request results: {bed.run_dir}/<policy>-0.jsonl; summary {out}"
          + (f"; plot {plot}" if plot else "") + f"; daemon logs in {bed.run_dir}.\nWhile a testbed is up "
          "(`tandem testbed up`), every daemon serves Prometheus metrics (ports in its state.json; "
          "deploy/prometheus.yml and deploy/grafana/ for the compose testbed).")
    return EXIT_OK


def plot_latencies(rows: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5))
    names = [r["policy"] for r in rows]
    axis.bar(names, [r["mean_latency_s"] for r in rows], label="mean")
    axis.scatter(names, [r["p95_latency_s"] for r in rows], color="black", zorder=3, label="p95")
    axis.set_ylabel("end-to-end latency (s, emulated)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
