"""How far trained actors are from the heuristic they correct: on a full-horizon twin episode played by ``mappo``
with each actor, the share of member decisions that move a user's k, and the margin by which the actor's logit for
"no change" beats its best other choice (negative: it moves k).

    OMP_NUM_THREADS=1 .venv/bin/python bench/actor_margin.py runs/mappo-umi-5x50-s0/best runs/mappo-umi-5x50-s1/best

Prints a row per actor, writes results/actor_margin.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bootstrap import REPO, RESULTS  # first: the repository on sys.path, one OpenMP thread

from controller.policies.draft_agent import SHIFT, decode, encode, members_of
from controller.policies.mappo import LearnedDraftLengths, prior_policy
from controller.twin.scenario import load_scenario
from controller.twin.simulator import DigitalTwin
from tandem.profiles import load_profile
from tandem.trace_format import load_trace


def margins(actor: LearnedDraftLengths, twin: DigitalTwin, seed: int) -> np.ndarray:
    """Every member decision's logit margin of "no change" over the best other choice, over one episode played
    as ``mappo`` plays it (the heuristic, then the actor's greedy choices)."""
    twin.reset(seed)
    prior_of = prior_policy(seed)
    found = []
    while not twin.finished:
        observation = twin.observation()
        prior = prior_of.decide(observation)
        members = members_of(observation, prior, actor.spec)
        encoded = encode(observation, prior, members, actor.spec, 0.0)
        logits = actor.network.logits(encoded)
        for edge, rows in enumerate(members.of_edge):
            chosen = logits[edge, :len(rows)]
            found.extend(chosen[:, SHIFT] - np.delete(chosen, SHIFT, axis=-1).max(axis=-1))
        twin.step(decode(observation, prior, members, actor(encoded), actor.spec))
    return np.array(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("actors", nargs="+", type=Path, help="policy folders (OUT/best of `tandem train`)")
    parser.add_argument("--scenario", type=Path, default=REPO / "configs" / "twin-umi.yaml")
    parser.add_argument("--trace", type=Path, default=REPO / "traces" / "umi-5x50-s2.npz")
    parser.add_argument("--seed", type=int, default=1_000_001)
    parser.add_argument("--out", type=Path, default=RESULTS / "actor_margin.json")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    twin = DigitalTwin(scenario, load_trace(args.trace), load_profile(scenario.profile))
    rows = {}
    print(f"{'actor':<40} {'decisions':>9} {'moved':>7} {'margin p5':>9} {'median':>7}")
    for folder in args.actors:
        found = margins(LearnedDraftLengths.from_folder(folder), twin, args.seed)
        rows[str(folder)] = {"decisions": int(len(found)), "moved": float(np.mean(found < 0)),
                             "margin_p5": float(np.percentile(found, 5)), "margin_median": float(np.median(found)),
                             "margin_min": float(found.min())}
        row = rows[str(folder)]
        print(f"{str(folder):<40} {row['decisions']:>9} {row['moved']:>7.2%} {row['margin_p5']:>9.2f} "
              f"{row['margin_median']:>7.2f}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"trace": str(args.trace), "seed": args.seed, "actors": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
