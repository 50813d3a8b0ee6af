"""Load on the testbed: many concurrent sessions for a bounded time, then what broke.

Brings the testbed up (deploy/testbed.yaml; traffic only to its own loopback daemons), runs every device with a
heavy Poisson workload for --minutes of real time, sampling every daemon's CPU and RSS, then reports requests
completed, errors (must be 0), latency percentiles, each daemon's RSS trend (MB/min), and tokens lost or
duplicated (must be 0): every answer must have exactly max_tokens tokens (EOS is ignored), and a sample is
teacher-forced through an edge (Score): each token must be the target's argmax, or a near-tie.

    .venv/bin/python bench/load.py --minutes 5          # results/load.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bootstrap import RESULTS  # first: the repository on sys.path, one OpenMP thread

from device_client.draft import LlamaCppDraftEngine
from device_client.grpc_edge import EdgeConnection
from device_client.workload import Workload
from testbed.bed import Testbed
from testbed.config import DEFAULT_CONFIG, load_testbed_config
from testbed.phases import set_policy
from testbed.resources import ResourceSampler

NEAR_TIE = 0.3  # largest top-2 log-probability gap seen to flip between batch shapes (harness/teacher_forcing.py)


def teacher_force(bed: Testbed, records: list[dict], sample: int) -> dict:
    """Score a sample of answers through edge 0: tokens that are not the target's argmax beyond a near-tie."""
    prompts = Workload().load_prompts()
    draft = LlamaCppDraftEngine(bed.draft_gguf, n_ctx=1024)
    connection = EdgeConnection(bed.find(f"edge {bed.scenario.edges[0].id}").address,
                                transport=bed.client_transport("device-0"))
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(records), size=min(sample, len(records)), replace=False)
    checked = wrong = near_ties = 0
    try:
        for index in chosen:
            record = records[index]
            prompt = draft.encode_chat(prompts[record["prompt"]])
            positions = connection.score(prompt + record["token_ids"], len(prompt), 2).positions
            for position in positions:
                checked += 1
                if position.token_id != position.top_ids[0]:
                    gap = position.top_logprobs[0] - position.token_logprob
                    near_ties += gap <= NEAR_TIE
                    wrong += gap > NEAR_TIE
    finally:
        connection.close()
    return {"answers": len(chosen), "tokens": checked, "not_argmax": wrong, "near_ties": near_ties}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--minutes", type=float, default=5.0, help="real minutes of arrivals (default 5)")
    parser.add_argument("--rate", type=float, default=0.5, help="requests per emulated second per user (default "
                        "0.5: every device busy nearly all the time)")
    parser.add_argument("--policy", default="tma-opt")
    parser.add_argument("--sample", type=int, default=20, help="answers to teacher-force (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args()
    if not (args.minutes > 0 and args.rate > 0):
        parser.error("--minutes and --rate must be positive")
    bed = Testbed(load_testbed_config(args.config).model_copy(
        update={"run_dir": load_testbed_config(args.config).run_dir.parent / "load"}))
    started = time.monotonic()
    sampler = ResourceSampler(bed, every_s=5.0)
    try:
        bed.up(devices=False)
        set_policy(bed, args.policy)
        sampler.start()
        until_s = args.minutes * 60 / bed.dilation
        fleets = bed.start_devices("load", until_s, rate_per_user_s=args.rate)
        while any(f.process.poll() is None for f in fleets):
            done = sum(1 for f in fleets for _ in f.results.open())
            print(f"\r{time.monotonic() - started:5.0f} s, {done} requests done", end="", flush=True)
            time.sleep(5)
        print()
        sampler.stopping.set()
        records = [json.loads(line) for f in fleets for line in f.results.read_text().splitlines()]
        ok = [r for r in records if "error" not in r]
        forced = teacher_force(bed, ok, args.sample)
    finally:
        sampler.stopping.set()
        bed.down()
    latency = np.array([r["latency_s"] for r in ok])
    wrong_length = [r for r in ok if len(r["token_ids"]) != bed.config.max_tokens]
    results = {
        "scenario": bed.scenario.name, "users": len(bed.scenario.user_ids()), "dilation": bed.dilation,
        "minutes": args.minutes, "rate_per_user_s": args.rate, "policy": args.policy,
        "requests": len(ok), "errors": len(records) - len(ok),
        "error_messages": sorted({r["error"] for r in records if "error" in r})[:5],
        "latency_s": {f"p{q}": float(np.percentile(latency, q)) for q in (50, 90, 99)} if ok else None,
        "tokens_generated": sum(len(r["token_ids"]) for r in ok),
        "answers_of_wrong_length": len(wrong_length), "teacher_forcing": forced,
        "daemons": sampler.report(), "wall_s": time.monotonic() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if results["errors"] == 0 and not wrong_length and forced["not_argmax"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
