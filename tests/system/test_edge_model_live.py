"""The edge model is the edge (issue 19): a real paced llama.cpp edge and real paced devices, one edge, n users on
a fixed (loopback) channel at a given draft length k and step budget S, run rounds whose mean time is what the
one edge model (tandem/edge_model.py) predicts, within 10% — with every block fitting one step, with an
oversubscribed step divided equally, and with one divided by unequal weights (compute shares set as the
controller sets them).

The profile is slow enough that this machine follows it at dilation D with room to spare (real compute well inside
each paced step), and verification-bound (drafting a block is a fifth of verifying it), as a loaded GPU edge is.
Only the rounds while every device is decoding are measured: the last ones to finish run alone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from device_client.decoding import decode_speculative
from device_client.draft import LlamaCppDraftEngine
from device_client.grpc_edge import EdgeConnection
from device_client.pacing import PacedDraftEngine
from device_client.routing import FixedRoute
from tandem.edge_model import EdgeTiming, edge_rounds
from tandem.pacing import Pacer
from tandem.profiles import load_profile
from tandem.sampling import SamplingConfig
from tandem.wire.v1 import control_pb2 as cpb
from tandem.wire.v1 import control_pb2_grpc
from tandem.processes import EdgeProcess
from harness.clients import creds
from harness.figures import REPORT

DILATION = 2.0
K = 4
USERS = 3
TOKENS = 64
TOLERANCE = 0.10
PROMPTS = ["Name three uses of a bicycle, with a sentence on each.", "Why is the sea salty? Explain briefly.",
           "Describe a good breakfast in three sentences."]
CASES = {  # name: (step budget S, compute shares or None for equal weights)
    # 3 blocks of 5 tokens fit one step; the users fall into two groups whose steps alternate (a user back from
    # its verdict finds the others' step just started): a round is T(1) + T(2).
    "fits": (64, None),
    "oversubscribed": (5, None),  # one block per step, equal weights: every user every third step
    "weighted": (5, {0: 0.5, 1: 0.25, 2: 0.25}),  # 2:1:1 of one block per step: every 2nd, 4th and 4th step
}


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("edge-model") / "slow-edge.yaml"
    path.write_text(yaml.safe_dump({
        "name": "slow-edge",
        # A draft token ~0.02 s real here, a llama.cpp block ~0.1 s (its first, with the prompt, ~0.6 s): every
        # budget below, times D, leaves room for three devices and the edge sharing two cores.
        "device": {"draft_model": "draft", "draft_seconds_per_token": 0.03, "prefill_seconds_per_token": 0.002,
                   "draft_power_w": 5.0, "transmit_power_w": 1.0},
        "edge": {"target_model": "target", "verify_base_seconds": 0.4, "verify_seconds_per_token": 0.01,
                 "prefill_seconds_per_token": 0.0,
                 "batch_scaling": [{"blocks": 1, "relative_time": 1.0}, {"blocks": 4, "relative_time": 1.3}]},
        "acceptance": {"per_token": 0.7}}))
    return path


def run_case(prepared, data_dir, pki, profile_path, logs, step_tokens: int, shares: dict | None) -> dict:
    # No batch window: on loopback a device whose speculation survived is back within the default 2 ms and joins
    # the step just starting, which no radio link allows (its round trip alone is longer); the model assumes one.
    edge = EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--tls-dir", str(pki), "--edge-id", "0",
                        "--slots", str(USERS), "--max-sessions", "16", "--metrics-port", "0", "--step-tokens",
                        str(step_tokens), "--batch-window", "0", "--profile", str(profile_path), "--dilation",
                        str(DILATION)],
                       log_path=logs / f"edge-{step_tokens}.log")
    with edge:
        if shares:
            with creds(pki, "controller").channel(edge.address, "edge", edge_id=0) as channel:
                control_pb2_grpc.EdgeControlStub(channel).SetShares(cpb.SetSharesRequest(version=1, shares=[
                    cpb.ComputeShare(user=u, share=s) for u, s in shares.items()]), timeout=10)
        profile = load_profile(profile_path)
        verdicts: dict[int, list[float]] = {u: [] for u in range(USERS)}
        results: dict[int, object] = {}
        pacers = {u: Pacer(DILATION) for u in range(USERS)}
        engines = {u: PacedDraftEngine(LlamaCppDraftEngine(prepared.draft_gguf), profile.device, pacers[u])
                   for u in range(USERS)}
        start = threading.Barrier(USERS)

        def device(user: int) -> None:
            connection = EdgeConnection(edge.address, transport=creds(pki, f"device-{user}"), edge_id=0)
            engine = engines[user]
            prompt = engine.encode_chat(PROMPTS[user])
            start.wait()
            try:
                results[user] = decode_speculative(
                    FixedRoute(connection), engine, prompt, SamplingConfig(), max_tokens=TOKENS, draft_length=K,
                    parallel=True, stop_ids=[], user=user, sink=lambda tokens: verdicts[user].append(
                        time.perf_counter()))
            finally:
                connection.close()

        threads = [threading.Thread(target=device, args=(u,)) for u in range(USERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    assert len(results) == USERS, "a device did not finish"
    # Measured: verdict-to-verdict intervals while every device decodes (after the last first verdict, before the
    # first device finishes), in emulated seconds.
    begin = max(times[0] for times in verdicts.values())
    end = min(times[-1] for times in verdicts.values())
    measured, hits = [], []
    for user in range(USERS):
        times = np.array(verdicts[user])
        inside = times[(times >= begin) & (times <= end)]
        assert len(inside) >= 5, f"user {user}: only {len(inside)} verdicts while all decoded"
        measured.append(float(np.mean(np.diff(inside))) / DILATION)
        result = results[user]
        # How often psd's speculation survived (the block all accepted and the bonus the drafted next token).
        hits.append(result.speculation_kept / max(1, result.rounds))
    timing = EdgeTiming(profile.edge, 1.0, step_tokens)
    weights = np.array([shares[u] for u in range(USERS)]) if shares else np.ones(USERS)
    draft = K * profile.device.draft_seconds_per_token + 2 * profile.device.prefill_seconds_per_token
    predicted = edge_rounds(timing, np.full(USERS, draft), np.zeros(USERS), np.array(hits), np.full(USERS, K),
                            weights, parallel=True).round_s
    overruns = sum(p.overruns for p in pacers.values()) / max(1, sum(p.steps for p in pacers.values()))
    return {"measured_round_s": measured, "predicted_round_s": predicted.tolist(), "hit": hits,
            "device_overrun_fraction": overruns}


@pytest.mark.parametrize("case", list(CASES))
def test_rounds_on_a_real_paced_edge_take_what_the_edge_model_predicts(case, prepared, data_dir, pki, profile_path,
                                                                       tmp_path):
    step_tokens, shares = CASES[case]
    figures = run_case(prepared, data_dir, pki, profile_path, tmp_path, step_tokens, shares)
    REPORT[f"edge_model_{case}"] = figures
    for user, (measured, predicted) in enumerate(zip(figures["measured_round_s"], figures["predicted_round_s"])):
        error = abs(measured - predicted) / predicted
        assert error < TOLERANCE, (f"{case}, user {user}: rounds of {measured:.3f} s measured, {predicted:.3f} s "
                                   f"predicted by the edge model ({error:.1%} off): {figures}")
