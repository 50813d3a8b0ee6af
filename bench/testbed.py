"""The testbed against the digital twin: the same scenario, trace and workload, under each policy.

Brings the testbed up (deploy/testbed.yaml: llama.cpp edges and phone devices paced like the profile's hardware at
dilation D), runs the seeded workload once per policy (swapped live through the admin CLI) and once in SD mode,
and replays each phase in the twin with the very arrival times and the trace slot the testbed played.  Prints
and writes mean/p95 latency, time to first token, tokens/s, device energy and the reduction against
max-sinr-equal, testbed and twin side by side (the sim-to-real gap), and PSD vs SD.

    .venv/bin/python bench/testbed.py                       # results/testbed.json, docs/testbed/latency.png
    .venv/bin/python bench/testbed.py --scale --dilation 20  # 50 devices x 5 edges (configs/twin-umi.yaml)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.policies import make_policy  # noqa: E402
from controller.twin.scenario import TokenCount  # noqa: E402
from controller.twin.simulator import DigitalTwin  # noqa: E402
from testbed.bed import Testbed  # noqa: E402
from testbed.config import DEFAULT_CONFIG, load_testbed_config  # noqa: E402
from testbed.metrics import scrape, total  # noqa: E402
from testbed.phases import Phase, print_table, run_phase  # noqa: E402
from testbed.resources import ResourceSampler  # noqa: E402

BASELINE = "max-sinr-equal"
POLICIES = (BASELINE, "tma-equal", "tma-opt")


def twin_replay(bed: Testbed, policy: str, phase: Phase, mode: str) -> dict:
    """The phase in the twin: its arrivals, its trace slot, its prompt and answer lengths."""
    arrivals: dict[int, list[float]] = {}
    for record in phase.records:
        arrivals.setdefault(record["user"], []).append(record["arrival_s"])
    prompt = [r["prompt_tokens"] for r in phase.records if "prompt_tokens" in r]
    last = max(r["arrival_s"] for r in phase.records)
    scenario = bed.scenario.model_copy(update={
        "prompt_tokens": TokenCount(kind="fixed", value=round(float(np.mean(prompt)))),
        "answer_tokens": TokenCount(kind="fixed", value=bed.config.max_tokens), "mode": mode,
        "duration_slots": int((last + 120) / bed.trace.slot_s)})
    twin = DigitalTwin(scenario, bed.trace, bed.profile, seed=0, arrivals=arrivals, trace_offset=phase.trace_slot)
    summary = twin.run(make_policy(policy)).summary().as_dict()
    return {"mean_latency_s": summary["mean_latency_s"], "p95_latency_s": summary["p95_latency_s"],
            "mean_ttft_s": summary["mean_ttft_s"], "mean_energy_j": summary["mean_energy_j"],
            "requests": summary["completed"], "migrations": summary["migrations"]}


def testbed_figures(phase: Phase) -> dict:
    ok = [r for r in phase.records if "error" not in r]
    return phase.summary | {"mean_energy_j": float(np.mean([r["energy_j"] for r in ok])) if ok else None}


def run_comparison(bed: Testbed, args) -> dict:
    results: dict = {"policies": {}}
    phases = {}
    for policy in args.policies:
        phases[policy] = run_phase(bed, policy, args.phase_s)
        results["policies"][policy] = {"testbed": testbed_figures(phases[policy]),
                                       "twin": twin_replay(bed, policy, phases[policy], bed.scenario.mode)}
    sd_policy = args.policies[-1]
    sd = run_phase(bed, sd_policy, args.phase_s, mode="sd", name=f"{sd_policy}-sd")
    psd_rate = results["policies"][sd_policy]["testbed"]["mean_tokens_per_s"]
    results["psd_vs_sd"] = {"policy": sd_policy, "psd_tokens_per_s": psd_rate,
                            "sd_tokens_per_s": sd.summary["mean_tokens_per_s"],
                            "ratio": psd_rate / sd.summary["mean_tokens_per_s"],
                            "sd_testbed": testbed_figures(sd), "sd_twin": twin_replay(bed, sd_policy, sd, "sd")}
    base = results["policies"].get(BASELINE)
    for figures in results["policies"].values():
        if base:
            for side in ("testbed", "twin"):
                figures[side]["reduction_vs_baseline"] = 1 - figures[side]["mean_latency_s"] / base[side][
                    "mean_latency_s"]
            figures["gap_pp"] = 100 * (figures["testbed"]["reduction_vs_baseline"]
                                       - figures["twin"]["reduction_vs_baseline"])
    print_table([testbed_figures(p) for p in phases.values()] + [testbed_figures(sd)])
    return results


def print_comparison(results: dict) -> None:
    print(f"\n{'policy':<16} {'testbed mean':>12} {'twin mean':>10} {'testbed p95':>11} {'twin p95':>9} "
          f"{'tb ttft':>8} {'twin ttft':>9} {'tok/s':>6} {'tb J':>6} {'twin J':>6} {'tb red.':>8} {'twin red.':>9} "
          f"{'gap pp':>7}")
    for name, f in results["policies"].items():
        tb, tw = f["testbed"], f["twin"]
        print(f"{name:<16} {tb['mean_latency_s']:>12.2f} {tw['mean_latency_s']:>10.2f} {tb['p95_latency_s']:>11.2f} "
              f"{tw['p95_latency_s']:>9.2f} {tb['mean_ttft_s']:>8.2f} {tw['mean_ttft_s']:>9.2f} "
              f"{tb['mean_tokens_per_s']:>6.1f} {tb['mean_energy_j']:>6.1f} {tw['mean_energy_j']:>6.1f} "
              f"{tb.get('reduction_vs_baseline', 0):>8.1%} {tw.get('reduction_vs_baseline', 0):>9.1%} "
              f"{f.get('gap_pp', 0):>7.1f}")
    s = results["psd_vs_sd"]
    print(f"PSD vs SD under {s['policy']}: {s['psd_tokens_per_s']:.1f} vs {s['sd_tokens_per_s']:.1f} tokens/s "
          f"(x{s['ratio']:.2f}); twin mean latency SD {s['sd_twin']['mean_latency_s']:.2f} s")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["policies"])
    x = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for offset, side in ((-0.2, "testbed"), (0.2, "twin")):
        means = [results["policies"][n][side]["mean_latency_s"] for n in names]
        p95 = [results["policies"][n][side]["p95_latency_s"] for n in names]
        axis.bar(x + offset, means, 0.4, label=f"{side} mean")
        axis.scatter(x + offset, p95, color="black", marker="_", s=200, zorder=3)
    axis.set_xticks(x, names)
    axis.set_ylabel("end-to-end latency (s; p95 as dashes)")
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
    parser.add_argument("--scale", action="store_true", help="50 devices x 5 edges (configs/twin-umi.yaml), one "
                        "phase: D, overruns, per-daemon CPU and RSS, controller decision time")
    parser.add_argument("--out", type=Path, help="JSON results (default results/testbed[-scale].json)")
    args = parser.parse_args()
    config = load_testbed_config(args.config)
    updates = {"dilation": args.dilation} if args.dilation else {}
    if args.scale:
        updates |= {"scenario": ROOT / "configs" / "twin-umi.yaml", "run_dir": config.run_dir.parent / "scale"}
    bed = Testbed(config.model_copy(update=updates))
    out = args.out or ROOT / "results" / ("testbed-scale.json" if args.scale else "testbed.json")
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
        plot(results, ROOT / "docs" / "testbed" / "latency.png")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
