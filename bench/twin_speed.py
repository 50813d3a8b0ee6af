"""Environment steps per second of the training game at 50 users x 5 edges (the shipped scenario), and where the
time goes: the twin's slot alone under a fixed decision, the heuristic's decision, the whole scalar game step (the
heuristic, the agents' encoding, the twin and the reward) with "no change" actions, and the batched game
(controller/twin/batch_game.py, what training samples) stepping ``--batch`` episodes at once.

Each measure plays ``--slots`` slots from the start of seeded episodes (arrivals begin at once: the shipped
scenario's Poisson load); medians over ``--repeats``; the batched game's figure is episodes × slots per second,
beside its ratio to the scalar game measured in the same run and to the 565 steps/s the issue started from.
Prints a table, writes results/twin_speed.json.

    OMP_NUM_THREADS=1 .venv/bin/python bench/twin_speed.py [--slots 300] [--repeats 3] [--batch 32 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bootstrap import REPO, RESULTS  # first: the repository on sys.path, one OpenMP thread

from controller.policies.draft_agent import SHIFT, AgentSpec
from controller.policies.mappo import prior_policy
from controller.twin.agents import DraftLengthGame
from controller.twin.batch import BatchTwin
from controller.twin.batch_game import BatchDraftGame
from controller.twin.scenario import load_scenario
from controller.twin.simulator import DigitalTwin
from tandem.profiles import load_profile
from tandem.trace_format import load_trace


def per_second(slots: int, seconds: float) -> float:
    return slots / seconds if seconds > 0 else float("nan")


def twin_alone(twin: DigitalTwin, slots: int) -> float:
    """The slot under the first slot's decision, repeated: the twin's own cost."""
    twin.reset(0)
    decision = prior_policy().decide(twin.observation())
    started = time.perf_counter()
    for _ in range(slots):
        twin.step(decision)
    return per_second(slots, time.perf_counter() - started)


def heuristic(twin: DigitalTwin, slots: int) -> tuple[float, float]:
    """(slots/s of the twin driven by the heuristic, decisions/s of the heuristic alone)."""
    twin.reset(0)
    policy, deciding = prior_policy(), 0.0
    started = time.perf_counter()
    for _ in range(slots):
        observation = twin.observation()
        before = time.perf_counter()
        decision = policy.decide(observation)
        deciding += time.perf_counter() - before
        twin.step(decision)
    return per_second(slots, time.perf_counter() - started), per_second(slots, deciding)


def game(twin: DigitalTwin, slots: int) -> float:
    play = DraftLengthGame(twin, AgentSpec(24))
    play.reset(0)
    keep = {agent: np.full(24, SHIFT) for agent in play.agents}
    started = time.perf_counter()
    for _ in range(slots):
        play.step(keep)
    return per_second(slots, time.perf_counter() - started)


def batched_game(scenario, trace, profile, size: int, slots: int) -> float:
    play = BatchDraftGame(BatchTwin([scenario] * size, [trace] * size, profile), AgentSpec(24), np.zeros(size))
    play.reset(list(range(size)))
    keep = np.full((size, len(scenario.edges), 24), SHIFT)
    started = time.perf_counter()
    for _ in range(slots):
        play.step(keep)
    return per_second(size * slots, time.perf_counter() - started)


STARTING_POINT = 565.0  # environment steps per second of the game before the batched twin (issue 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "configs" / "twin-umi.yaml")
    parser.add_argument("--trace", type=Path, default=REPO / "traces" / "umi-5x50-s10.npz")
    parser.add_argument("--slots", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128], help="episodes per batch to measure")
    parser.add_argument("--out", type=Path, default=RESULTS / "twin_speed.json")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    trace, profile = load_trace(args.trace), load_profile(scenario.profile)
    twin = DigitalTwin(scenario, trace, profile)
    batched = [f"batched game, {size} episodes" for size in args.batch]
    runs = {name: [] for name in ["twin slot alone", "twin + heuristic", "heuristic decision alone", "game step",
                                  *batched]}
    for _ in range(args.repeats):
        runs["twin slot alone"].append(twin_alone(twin, args.slots))
        with_policy, deciding = heuristic(twin, args.slots)
        runs["twin + heuristic"].append(with_policy)
        runs["heuristic decision alone"].append(deciding)
        runs["game step"].append(game(twin, args.slots))
        for name, size in zip(batched, args.batch):
            runs[name].append(batched_game(scenario, trace, profile, size, args.slots))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    print(f"{scenario.users} users x {len(scenario.edges)} edges, {args.slots} slots, median of {args.repeats}:")
    for name, value in medians.items():
        ratios = (f"  x{value / medians['game step']:.0f} the scalar game, x{value / STARTING_POINT:.0f} the "
                  f"starting {STARTING_POINT:.0f}/s" if name in batched else "")
        print(f"  {name:<30} {value:8.1f} per second{ratios}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"users": scenario.users, "edges": len(scenario.edges), "slots": args.slots,
                                    "repeats": args.repeats, "per_second": medians, "runs": runs,
                                    "starting_point_per_second": STARTING_POINT}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
