"""`tandem demo` (the README's main job): the testbed up on the shipped scenario, the same workload under the
baseline (max-SINR with handover hysteresis) and the best policy the twin found, swapped live through the admin
CLI, then the paired reduction of mean time in system with its 95% interval — said plainly when it is not
significant — beside the twin's prediction for the same run; everything torn down.

Every phase replays the same seeded workload (same arrivals, same prompts) from a fresh device fleet while the
edges, the link emulator and the controller keep running; between phases `tandem policy set` swaps the
controller's policy, as an operator would.  About ten minutes at the default phase length.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, fail
from testbed.compare import describe, measured_acceptance, paired_reduction, twin_replay
from testbed.config import load_testbed_config
from testbed.phases import print_table, run_phase


def run_demo(args: argparse.Namespace) -> int:
    from tandem.models import default_data_dir
    from tandem.processes import DaemonFailed
    from testbed.bed import Testbed
    from toolbox.models import prepare_models

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
    phases = []
    try:
        bed.up(devices=False)
        for policy in args.policies:
            phases.append(run_phase(bed, policy, args.phase_s))
    except DaemonFailed as error:
        return fail(str(error), EXIT_FAILED)
    except UsageError as error:
        return fail(str(error), EXIT_USAGE)
    finally:
        print("tearing the testbed down...", flush=True)
        bed.down()
    rows = [phase.summary for phase in phases]
    print_table(rows)
    base, baseline = phases[0], args.policies[0]
    # The twin draws acceptance as the testbed's models accept (the baseline drafts the scenario's fixed length).
    alpha = measured_acceptance(base.records, bed.scenario.draft_length)
    print(f"acceptance of the testbed's draft/target pair: alpha = {alpha:.2f} per token (the twin replays with it)")
    twin_base = twin_replay(bed, baseline, base.records, base.trace_slot, bed.scenario.mode, alpha)
    for policy, phase, row in zip(args.policies[1:], phases[1:], rows[1:]):
        twin = twin_replay(bed, policy, phase.records, phase.trace_slot, bed.scenario.mode, alpha)
        row["paired_vs_baseline"] = paired_reduction(base.records, phase.records)
        row["twin_reduction_vs_baseline"] = 1 - twin["mean_time_in_system_s"] / twin_base["mean_time_in_system_s"]
        print(describe(policy, baseline, row["paired_vs_baseline"], row["twin_reduction_vs_baseline"]))
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
