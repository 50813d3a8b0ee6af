"""Decision time per slot of every policy for 10/50/200 users x 3/5/10 edges (synthetic observations), and the
estimated mean latency each policy's decision gives (the same latency model as the policies use).

Prints a table of medians over repeats and writes results/controller_bench.json.  The learned ``mappo``
(the shipped policy folder) has user slots for at most ``max_users`` users per edge: it is measured with edges of
that capacity, and not where the users do not fit them (shown as "-").

    OMP_NUM_THREADS=1 .venv/bin/python bench/controller.py [--repeats 5] [--policy NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bootstrap import RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread

from controller.estimator import EdgeState, UserState
from controller.policies import available, make_policy
from controller.policies.base import Observation
from tandem.edge_model import EdgeTiming
from tandem.profiles import SHIPPED_PROFILE, load_profile

plaintext_on_loopback()

GPU_EDGE = load_profile(SHIPPED_PROFILE).edge

SIZES = [(users, edges) for users in (10, 50, 200) for edges in (3, 5, 10)]


def observation(num_users: int, num_edges: int, seed: int, capacity: int | None = None) -> Observation:
    """Users spread over a cell grid: spectral efficiency falls with distance to each edge (log-distance)."""
    rng = np.random.default_rng(seed)
    edge_pos = rng.uniform(0, 500, (num_edges, 2))
    user_pos = rng.uniform(0, 500, (num_users, 2))
    distance = np.linalg.norm(user_pos[:, None, :] - edge_pos[None, :, :], axis=2) + 10
    sinr_db = 60 - 35 * np.log10(distance) + rng.normal(0, 4, distance.shape)
    se = np.clip(np.log2(1 + 10 ** (sinr_db / 10)), 0, 5.5)
    edges = tuple(EdgeState(e, 20e6, EdgeTiming(GPU_EDGE, float(rng.uniform(0.05, 0.2))),
                            capacity=capacity or num_users)
                  for e in range(num_edges))
    users = tuple(UserState(u, se_up=tuple(0.6 * se[u]), se_down=tuple(se[u]),
                            draft_s_per_token=float(rng.uniform(0.008, 0.03)), acceptance=float(rng.uniform(0.6, 0.85)),
                            draft_length=4, pending_tokens=int(rng.integers(32, 256)), rtt_s=0.01)
                  for u in range(num_users))
    return Observation(0, edges, users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "controller_bench.json")
    parser.add_argument("--policy", action="append", help="only these policies (repeatable; default every one)")
    args = parser.parse_args()
    names = sorted(args.policy or available())
    slots = {name: make_policy(name).actor.spec.max_users for name in names if name == "mappo"}
    rows = []
    print(f"{'users':>5} {'edges':>5} " + " ".join(f"{name + ' ms':>16}" for name in names)
          + "   mean latency s (" + ", ".join(names) + ")")
    for users, edges in SIZES:
        row = {"users": users, "edges": edges, "decision_ms": {}, "mean_latency_s": {}}
        for name in names:
            if name in slots and users > edges * slots[name]:
                row["decision_ms"][name] = row["mean_latency_s"][name] = float("nan")
                continue
            times, latencies = [], []
            for repeat in range(args.repeats):
                obs = observation(users, edges, seed=repeat, capacity=min(users, slots.get(name, users)))
                policy = make_policy(name, seed=repeat)
                started = time.perf_counter()
                decision = policy.decide(obs)
                times.append(time.perf_counter() - started)
                decision.check(obs)
                latencies.append(float(decision.estimated_latency(obs).mean()))
            row["decision_ms"][name] = 1000 * statistics.median(times)
            row["mean_latency_s"][name] = statistics.median(latencies)
        rows.append(row)
        print(f"{users:>5} {edges:>5} " + " ".join(f"{row['decision_ms'][n]:>16.2f}" for n in names) + "   "
              + ", ".join(f"{row['mean_latency_s'][n]:.2f}" for n in names))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
