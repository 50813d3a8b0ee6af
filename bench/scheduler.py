"""Compute-share enforcement on a real edge: achieved share of verification service vs the configured share.

One llama.cpp edge daemon; two users each keep several sessions sending 4-token blocks back to back (synthetic
drafts: no draft model competes for the CPU, so the edge is the bottleneck).  Shares are set through EdgeControl
exactly as the controller sets them; over each window the edge's served-token counters give each user's fraction
of the verification work.  Reported: the median over repeated windows of achieved/configured, per share split and
per engine-step budget (--step-tokens: how much work one step may batch).

    .venv/bin/python bench/scheduler.py [--repeats 3] [--window 6]

Writes results/scheduler_bench.json.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from bootstrap import RESULTS, plaintext_on_loopback  # first: the repository on sys.path, one OpenMP thread
# In plaintext the edge's EdgeControl answers only calls carrying its admin token: one for this run.
ADMIN_TOKEN = secrets.token_urlsafe(24)

from device_client.edge_handle import SessionSpec
from device_client.grpc_edge import EdgeConnection
from tandem.processes import EdgeProcess
from tandem.rpc import bearer_metadata
from tandem.sampling import SamplingConfig
from tandem.wire.v1 import control_pb2 as cpb
from tandem.wire.v1 import control_pb2_grpc

plaintext_on_loopback()

SPLITS = [(0.7, 0.3), (0.5, 0.5), (0.9, 0.1)]
# (engine-step budget in tokens, sessions per user): one block per step; up to four blocks per step with fewer
# waiting blocks than a step takes (work conservation hands spare room to whoever waits) and with more.
SETTINGS = [(5, 3), (20, 3), (20, 8)]
BLOCK = 4
PROMPT = list(range(1000, 1032))
MAX_TOKENS_PER_SESSION = 1500


def client(address: str, user: int, stop: threading.Event, vocab: int, seed: int) -> None:
    """One session of ``user`` sending random blocks as fast as the edge verifies them (reopened before the
    context fills)."""
    rng = random.Random(seed)
    edge = EdgeConnection(address)
    try:
        while not stop.is_set():
            session = edge.open(SessionSpec(PROMPT, SamplingConfig(), True, draft_length=BLOCK, user=user))
            position = len(PROMPT)
            while not stop.is_set() and position < MAX_TOKENS_PER_SESSION:
                session.send_block(position, [rng.randrange(vocab) for _ in range(BLOCK)], None)
                verdict = session.receive_verdict()
                position += verdict.accepted + 1
            session.close()
    finally:
        edge.close()


def served(control) -> dict[int, int]:
    load = control.GetLoad(cpb.GetLoadRequest(), timeout=10, metadata=bearer_metadata(ADMIN_TOKEN))
    return {u.user: u.served_tokens for u in load.users}


def measure(address: str, vocab: int, split: tuple[float, float], version: int, sessions: int, repeats: int,
            window: float) -> dict:
    control = control_pb2_grpc.EdgeControlStub(grpc.insecure_channel(address))
    control.SetShares(cpb.SetSharesRequest(version=version, shares=[
        cpb.ComputeShare(user=user, share=share) for user, share in enumerate(split)]), timeout=10,
        metadata=bearer_metadata(ADMIN_TOKEN))
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(address, user, stop, vocab, 100 * user + i), daemon=True)
               for user in range(len(split)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    time.sleep(window / 2)  # warm-up: every session opened and backlogged
    fractions = []
    for _ in range(repeats):
        before = served(control)
        time.sleep(window)
        after = served(control)
        delta = {user: after.get(user, 0) - before.get(user, 0) for user in range(len(split))}
        total = sum(delta.values())
        fractions.append(delta[0] / total if total else float("nan"))
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    achieved = statistics.median(fractions)
    return {"configured": split[0], "achieved_median": achieved, "achieved_windows": fractions,
            "ratio": achieved / split[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurement windows per setting")
    parser.add_argument("--window", type=float, default=6.0, help="seconds per window")
    parser.add_argument("--out", type=Path, default=RESULTS / "scheduler_bench.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as logs:
        for budget, sessions in SETTINGS:
            with EdgeProcess(["--engine", "llamacpp", "--step-tokens", str(budget), "--slots", "16",
                              "--max-sessions", "32"], log_path=Path(logs) / f"edge-{budget}.log",
                             env={"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN}) as edge:
                vocab = EdgeConnection(edge.address).info().vocab_size
                for version, split in enumerate(SPLITS, start=1):
                    row = {"step_tokens": budget, "sessions_per_user": sessions,
                           **measure(edge.address, vocab, split, version, sessions, args.repeats, args.window)}
                    rows.append(row)
                    print(f"step {budget:>3} tokens, {sessions} sessions/user, share {split[0]:.2f}/{split[1]:.2f}: "
                          f"user 0 achieved {row['achieved_median']:.3f} (achieved/configured {row['ratio']:.3f})",
                          flush=True)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"block": BLOCK, "window_s": args.window, "repeats": args.repeats, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
