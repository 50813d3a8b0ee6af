"""`tandem twin run`: play a scenario in the digital twin under one or more policies, side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail

BASELINE = "max-sinr-equal"


def add_twin_commands(commands: argparse._SubParsersAction) -> None:
    twin = commands.add_parser("twin", help="the digital twin: policies on a scenario, without daemons")
    actions = twin.add_subparsers(dest="twin_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="play a scenario under each policy and compare latency, time to first token and energy",
        description="Slot by slot on the scenario's channel trace and hardware profile (docs/twin.md): each policy "
        "decides every slot, the twin plays every user's speculative-decoding rounds with the same latency model "
        "the policies use. Deterministic for a seed; every policy sees the same requests.")
    run.add_argument("--scenario", type=Path, required=True, help="scenario YAML (see docs/twin.md)")
    run.add_argument("--policy", action="append", help=f"policy to play (repeatable; default: every installed one "
                     f"but the diagnostic `alternate`); reductions are against {BASELINE}")
    run.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and acceptance (default 0)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=run_twin)


def run_twin(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from controller.policies import available, make_policy
    from controller.twin.scenario import ScenarioError, load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import ProfileError, load_profile
    from tandem.traces.format import TraceError, load_trace

    if args.seed < 0:
        return fail("--seed must be non-negative", EXIT_USAGE)
    try:
        scenario = load_scenario(args.scenario)
        trace = load_trace(scenario.trace)
        profile = load_profile(scenario.profile)
        scenario.check_against(trace.metadata.num_users, trace.metadata.num_edges)
        names = args.policy or sorted(name for name in available() if name != "alternate")
        policies = {name: make_policy(name, seed=args.seed) for name in names}
    except (ScenarioError, TraceError, ProfileError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    results = {}
    for name, policy in policies.items():
        twin = DigitalTwin(scenario, trace, profile, seed=args.seed)
        with tqdm(total=scenario.duration_slots, desc=name, unit="slot", file=sys.stderr,
                  disable=args.quiet or args.json) as bar:
            while not twin.finished:
                twin.step(policy.decide(twin.observation()))
                bar.update()
        results[name] = twin.summary().as_dict()
    baseline = results.get(BASELINE)
    for summary in results.values():
        summary["latency_reduction_vs_baseline"] = (
            1 - summary["mean_latency_s"] / baseline["mean_latency_s"] if baseline else None)
    if args.json:
        print(json.dumps({"scenario": scenario.name, "seed": args.seed, "policies": results}))
        return EXIT_OK
    print(f"scenario {scenario.name}, seed {args.seed}, {scenario.duration_slots} slots of {trace.slot_s:g} s")
    print(f"{'policy':<16} {'done':>5} {'left':>5} {'mean s':>8} {'p95 s':>8} {'ttft s':>8} {'energy J':>9} "
          f"{'moves':>6} {'vs ' + BASELINE:>20}")
    for name, s in results.items():
        reduction = s["latency_reduction_vs_baseline"]
        print(f"{name:<16} {s['completed']:>5} {s['unfinished']:>5} {s['mean_latency_s']:>8.3f} "
              f"{s['p95_latency_s']:>8.3f} {s['mean_ttft_s']:>8.3f} {s['mean_energy_j']:>9.2f} {s['migrations']:>6} "
              f"{'' if reduction is None else f'{reduction:+.1%}':>20}")
    return EXIT_OK
