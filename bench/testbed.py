"""The testbed against the digital twin: the same scenario, trace and workload, under each policy.

Brings the testbed up (deploy/testbed.yaml: llama.cpp edges and phone devices paced like the profile's hardware at
dilation D), runs the seeded workload once per policy (swapped live through the admin CLI, the radio trace played
from the same slot: LinkControl.Seek) and once in SD mode (unless --no-sd), and replays each phase in the twin
with the very arrival times, trace slot and the acceptance the testbed's models showed.  Prints
and writes mean time in system, p95 latency, time to first token, tokens/s, device energy and the reduction
against max-sinr-hysteresis (paired per request on the testbed, with its 95% interval), testbed and twin side by
side (the sim-to-real gap), and PSD vs SD.

    .venv/bin/python bench/testbed.py                       # results/testbed.json, docs/testbed/latency.png
    .venv/bin/python bench/testbed.py --scale --dilation 20  # 50 devices x 5 edges (configs/twin-umi.yaml)
    .venv/bin/python bench/testbed.py --scale --scenario configs/scale-umi-10x200.yaml --dilation 40  # 200 x 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bootstrap import REPO, RESULTS  # first: the repository on sys.path, one OpenMP thread

from device_client.speculation import DEFAULT_PSD_VARIANT
from testbed.bed import Testbed
from testbed.compare import measured_acceptance, paired_reduction, twin_replay
from testbed.config import DEFAULT_CONFIG, load_testbed_config
from testbed.metrics import scrape, total
from testbed.phases import Phase, print_table, run_phase
from testbed.resources import ResourceSampler

BASELINE = "max-sinr-hysteresis"
POLICIES = (BASELINE, BASELINE + ":draft_lengths=tuned", "tma-equal", "tma-equal:draft_lengths=tuned")


def twin_figures(bed: Testbed, policy: str, phase: Phase, mode: str, alpha: float) -> dict:
    return twin_replay(bed, policy, phase.records, phase.trace_slot, mode, alpha)


def testbed_figures(phase: Phase) -> dict:
    ok = [r for r in phase.records if "error" not in r]
    return phase.summary | {"mean_energy_j": float(np.mean([r["energy_j"] for r in ok])) if ok else None}


def run_comparison(bed: Testbed, args) -> dict:
    results: dict = {"policies": {}, "psd_vs_sd": None}
    phases = {policy: run_phase(bed, policy, args.phase_s) for policy in args.policies}
    # The twin draws acceptance as the testbed's models accept (the baseline, first, drafts the fixed length).
    alpha = measured_acceptance(phases[args.policies[0]].records, bed.scenario.draft_length)
    results["alpha"] = alpha
    for policy, phase in phases.items():
        results["policies"][policy] = {"testbed": testbed_figures(phase),
                                       "twin": twin_figures(bed, policy, phase, bed.scenario.mode, alpha)}
    base = results["policies"].get(BASELINE)
    for policy, figures in results["policies"].items():
        if base:
            for side in ("testbed", "twin"):
                figures[side]["reduction_vs_baseline"] = 1 - figures[side]["mean_time_in_system_s"] / base[side][
                    "mean_time_in_system_s"]
            figures["paired_vs_baseline"] = paired_reduction(phases[BASELINE].records, phases[policy].records)
            figures["gap_pp"] = 100 * (figures["testbed"]["reduction_vs_baseline"]
                                       - figures["twin"]["reduction_vs_baseline"])
    rows = [testbed_figures(p) for p in phases.values()]
    if not args.no_sd:
        sd_policy = args.policies[-1]
        sd = run_phase(bed, sd_policy, args.phase_s, mode="sd", name=f"{sd_policy}-sd")
        psd_phases = {DEFAULT_PSD_VARIANT: phases[sd_policy]} | {
            variant: run_phase(bed, sd_policy, args.phase_s, name=f"{sd_policy}-psd-{variant}", psd_variant=variant)
            for variant in args.psd_variants if variant != DEFAULT_PSD_VARIANT}
        results["psd_vs_sd"] = {"policy": sd_policy, "sd_tokens_per_s": sd.summary["mean_tokens_per_s"],
                                "sd_efficiency": sd.summary["mean_efficiency"],
                                "sd_testbed": testbed_figures(sd),
                                "sd_twin": twin_figures(bed, sd_policy, sd, "sd", alpha), "variants": {}}
        for variant, phase in psd_phases.items():
            results["psd_vs_sd"]["variants"][variant] = {
                "tokens_per_s": phase.summary["mean_tokens_per_s"], "efficiency": phase.summary["mean_efficiency"],
                "per_token_s": phase.summary["per_token_s"],
                "ratio": phase.summary["mean_tokens_per_s"] / sd.summary["mean_tokens_per_s"],
                "time_in_system_vs_sd": paired_reduction(sd.records, phase.records)}
        rows += [testbed_figures(sd)] + [testbed_figures(p) for v, p in psd_phases.items() if v != DEFAULT_PSD_VARIANT]
    print_table(rows)
    return results


def print_comparison(results: dict) -> None:
    print(f"\n{'policy':<40} {'testbed in sys':>14} {'twin in sys':>11} {'testbed p95':>11} {'twin p95':>9} "
          f"{'tok/s':>6} {'tb J':>6} {'twin J':>6} {'testbed red. (paired, 95% CI)':>30} {'twin red.':>9} "
          f"{'gap pp':>7}")
    for name, f in results["policies"].items():
        tb, tw = f["testbed"], f["twin"]
        paired = f.get("paired_vs_baseline") or {}
        measured = (f"{paired['reduction']:+.1%} ± {paired['ci95']:.1%}" if paired.get("pairs", 0) > 1 else "–")
        print(f"{name:<40} {tb['mean_time_in_system_s']:>14.2f} {tw['mean_time_in_system_s']:>11.2f} "
              f"{tb['p95_latency_s']:>11.2f} {tw['p95_latency_s']:>9.2f} {tb['mean_tokens_per_s']:>6.1f} "
              f"{tb['mean_energy_j']:>6.1f} {tw['mean_energy_j']:>6.1f} {measured:>30} "
              f"{tw.get('reduction_vs_baseline', 0):>9.1%} {f.get('gap_pp', 0):>7.1f}")
    s = results["psd_vs_sd"]
    if s is None:
        return
    for variant, v in s["variants"].items():
        paired = v["time_in_system_vs_sd"]
        print(f"PSD ({variant}) vs SD under {s['policy']}: {v['tokens_per_s']:.1f} vs {s['sd_tokens_per_s']:.1f} "
              f"tokens/s (x{v['ratio']:.2f}); efficiency {v['efficiency']:.2f} vs {s['sd_efficiency']:.2f} of the "
              f"bound; time in system {paired['reduction']:+.1%} ± {paired['ci95']:.1%} (paired, {paired['pairs']} "
              "requests)")
    print(f"twin mean latency SD {s['sd_twin']['mean_latency_s']:.2f} s")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["policies"])
    x = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for offset, side in ((-0.2, "testbed"), (0.2, "twin")):
        means = [results["policies"][n][side]["mean_time_in_system_s"] for n in names]
        p95 = [results["policies"][n][side]["p95_latency_s"] for n in names]
        axis.bar(x + offset, means, 0.4, label=f"{side} mean")
        axis.scatter(x + offset, p95, color="black", marker="_", s=200, zorder=3)
    axis.set_xticks(x, names)
    axis.set_ylabel("time in system (s; p95 latency as dashes)")
    axis.set_title("Same scenario, trace and arrivals: testbed (real daemons, paced) vs twin")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_scale(bed: Testbed, args) -> dict:
    sampler = ResourceSampler(bed)
    sampler.start()
    phase = run_phase(bed, args.policies[-1], args.phase_s, name="scale")
    sampler.stopping.set()
    controller = scrape(bed.config.host, bed.find("controller").metrics_port)
    decisions = total(controller, "tandem_controller_decision_seconds_count")
    return {"users": len(bed.scenario.user_ids()), "edges": len(bed.scenario.edges), "dilation": bed.dilation,
            "phase": phase.summary, "daemons": sampler.report(),
            "controller_decision_ms": 1000 * total(controller, "tandem_controller_decision_seconds_sum") / decisions
            if decisions else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--phase-s", type=float, default=30.0, help="emulated seconds of arrivals per phase")
    parser.add_argument("--dilation", type=float, help="override the config's D")
    parser.add_argument("--no-sd", action="store_true", help="skip the SD phase (PSD vs SD)")
    parser.add_argument("--psd-variants", nargs="+", default=[DEFAULT_PSD_VARIANT],
                        help="psd variants to compare with SD, a phase each under the last policy (default: the "
                        "devices' default, which the policy phases already ran)")
    parser.add_argument("--scale", action="store_true", help="one phase of a large scenario (--scenario): D, "
                        "overruns, per-daemon CPU and RSS, controller decision time")
    parser.add_argument("--scenario", type=Path, default=REPO / "configs" / "twin-umi.yaml",
                        help="--scale's scenario (default configs/twin-umi.yaml: 50 devices x 5 edges; "
                        "configs/scale-umi-10x200.yaml: 200 x 10)")
    parser.add_argument("--users-per-process", type=int, help="--scale: emulated devices per device process "
                        "(default: the config's)")
    parser.add_argument("--out", type=Path, help="JSON results (default results/testbed[-scale].json)")
    args = parser.parse_args()
    config = load_testbed_config(args.config)
    updates = {"dilation": args.dilation} if args.dilation else {}
    if args.scale:
        updates |= {"scenario": args.scenario.resolve(), "run_dir": config.run_dir.parent / "scale"}
        if args.users_per_process:
            updates["users_per_process"] = args.users_per_process
    bed = Testbed(config.model_copy(update=updates))
    out = args.out or RESULTS / ("testbed-scale.json" if args.scale else "testbed.json")
    started = time.monotonic()
    try:
        bed.up(devices=False)
        results = run_scale(bed, args) if args.scale else run_comparison(bed, args)
    finally:
        bed.down()
    results |= {"scenario": bed.scenario.name, "dilation": bed.dilation, "phase_s": args.phase_s,
                "profile": bed.profile.name, "wall_s": time.monotonic() - started}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if args.scale:
        print(json.dumps(results, indent=2))
    else:
        print_comparison(results)
        plot(results, REPO / "docs" / "testbed" / "latency.png")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
