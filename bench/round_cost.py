"""What a round of parallel speculative decoding costs on real paced daemons, by draft length, against the model.

One paced llama.cpp edge (the testbed's profile at its compute scale) and one paced device (the profile's phone),
connected directly on loopback (no radio: the model's link term is 0), decode the same prompts in psd at each
draft length k.  For each k: the mean round (verdict to verdict, emulated seconds), tokens per round, how often
the speculation survived (hit), time per token; and what the edge model (tandem/edge_model.py) predicts for that
round — with the measured hit, and with the twin's α^(k+1) at the measured per-token acceptance.  The difference
is what a round costs on the daemons that the model leaves out: this is the bench behind the testbed's
sim-to-real gap on the draft-length lever (docs/testbed.md).

    OMP_NUM_THREADS=1 .venv/bin/python bench/round_cost.py [--lengths 1 2 4 8] [--dilation 8] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bootstrap import REPO, RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread

from controller.estimator import acceptance_from_rate
from device_client.decoding import decode_speculative
from device_client.draft import LlamaCppDraftEngine
from device_client.grpc_edge import EdgeConnection
from device_client.pacing import PacedDraftEngine
from device_client.routing import FixedRoute
from tandem.edge_model import EdgeTiming, edge_rounds, hit_probability
from tandem.models import default_data_dir
from toolbox.models import prepare_models
from tandem.pacing import Pacer
from tandem.profiles import load_profile
from tandem.sampling import SamplingConfig
from tandem.processes import EdgeProcess

plaintext_on_loopback()

PROFILE = REPO / "profiles" / "phone-1b-gpu-8b.yaml"
PROMPTS = ("Name three uses of a bicycle, with a sentence on each.", "Why is the sea salty? Explain briefly.",
           "Describe a good breakfast in three sentences.")


def measure(edge: EdgeProcess, engine: PacedDraftEngine, k: int, tokens: int, dilation: float) -> dict:
    """Decode every prompt at draft length k; rounds from verdict to verdict in emulated seconds (the first
    round, which carries the prompt, left out)."""
    intervals, accepted, drafted, rounds, kept = [], 0, 0, 0, 0
    for prompt in PROMPTS:
        verdicts: list[float] = []
        connection = EdgeConnection(edge.address)
        try:
            result = decode_speculative(FixedRoute(connection), engine, engine.encode_chat(prompt), SamplingConfig(),
                                        max_tokens=tokens, draft_length=k, parallel=True, stop_ids=[],
                                        sink=lambda _: verdicts.append(time.perf_counter()))
        finally:
            connection.close()
        intervals += list(np.diff(verdicts) / dilation)
        accepted, drafted = accepted + result.accepted, drafted + result.drafted_sent
        rounds, kept = rounds + result.rounds, kept + result.speculation_kept
    return {"k": k, "round_s": float(np.mean(intervals)), "rounds": rounds,
            "tokens_per_round": (accepted + rounds) / rounds, "accepted_per_drafted": accepted / drafted,
            "hit": kept / rounds}  # the rounds whose drafting ahead survived the verdict


def predict(profile, timing: EdgeTiming, row: dict) -> dict:
    k = row["k"]
    draft = np.array([k * profile.device.draft_seconds_per_token])
    alpha = float(acceptance_from_rate(row["accepted_per_drafted"], k))
    one = np.ones(1)

    def round_at(hit: float) -> float:
        return float(edge_rounds(timing, draft, np.zeros(1), np.array([hit]), np.array([k]), one, True).round_s[0])

    model, twin_hit = round_at(row["hit"]), float(hit_probability(alpha, k))
    return {"alpha": alpha, "model_round_s": model, "twin_hit": twin_hit, "twin_round_s": round_at(twin_hit),
            "extra_s": row["round_s"] - model}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 4, 8], help="draft lengths k")
    parser.add_argument("--dilation", type=float, default=8.0, help="D (the testbed's)")
    parser.add_argument("--compute-scale", type=float, default=0.05, help="the edge's share of the profile's GPU "
                        "(default 0.05: the testbed's edges 0 and 2)")
    parser.add_argument("--tokens", type=int, default=48, help="tokens per prompt")
    parser.add_argument("--out", type=Path, default=RESULTS / "round_cost.json")
    args = parser.parse_args()
    prepared = prepare_models(default_data_dir())
    profile = load_profile(PROFILE)
    timing = EdgeTiming(profile.edge, args.compute_scale)
    engine = PacedDraftEngine(LlamaCppDraftEngine(prepared.draft_gguf), profile.device, Pacer(args.dilation))
    logs = RESULTS / "round_cost"
    logs.mkdir(parents=True, exist_ok=True)
    edge = EdgeProcess(["--engine", "llamacpp", "--data-dir", str(default_data_dir()), "--insecure", "--edge-id",
                        "0", "--metrics-port", "0", "--profile", str(PROFILE), "--dilation", str(args.dilation),
                        "--compute-scale", str(args.compute_scale)], log_path=logs / "edge.log")
    rows = []
    with edge:
        for k in args.lengths:
            row = measure(edge, engine, k, args.tokens, args.dilation)
            row |= predict(profile, timing, row)
            rows.append(row)
            print(f"k={k}: round {row['round_s'] * 1000:.0f} ms measured, {row['model_round_s'] * 1000:.0f} ms by "
                  f"the model at the measured hit {row['hit']:.2f} (+{row['extra_s'] * 1000:.0f} ms), "
                  f"{row['twin_round_s'] * 1000:.0f} ms at the twin's hit {row['twin_hit']:.2f}; "
                  f"{row['tokens_per_round']:.2f} tokens per round, alpha {row['alpha']:.2f}", flush=True)
    print(f"\n{'k':>3} {'round ms':>9} {'model ms':>9} {'extra ms':>9} {'twin ms':>8} {'hit':>5} {'twin hit':>8} "
          f"{'tok/round':>9} {'ms/token':>9} {'model ms/token':>14}")
    for r in rows:
        print(f"{r['k']:>3} {r['round_s'] * 1000:>9.0f} {r['model_round_s'] * 1000:>9.0f} {r['extra_s'] * 1000:>9.0f} "
              f"{r['twin_round_s'] * 1000:>8.0f} {r['hit']:>5.2f} {r['twin_hit']:>8.2f} {r['tokens_per_round']:>9.2f} "
              f"{r['round_s'] / r['tokens_per_round'] * 1000:>9.1f} "
              f"{r['model_round_s'] / r['tokens_per_round'] * 1000:>14.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dilation": args.dilation, "compute_scale": args.compute_scale,
                                    "profile": profile.name, "rows": rows}, indent=2))
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
