"""Hardware pacing with time dilation (tandem/pacing.py), with a real llama.cpp edge and a real draft model.

One device and one edge emulate a profile at dilation D: the measured time per token, divided by D, matches what
the profile predicts for the rounds that ran; a profile faster than this machine can follow has its overruns
counted, on the edge (Prometheus) and on the device.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from device_client.decoding import decode_speculative
from device_client.grpc_edge import EdgeConnection
from device_client.pacing import PacedDraftEngine
from device_client.routing import FixedRoute
from tandem.pacing import Pacer
from tandem.profiles import load_profile
from tandem.sampling import SamplingConfig
from harness.clients import run_tandem
from harness.figures import REPORT
from tandem.processes import EdgeProcess

DILATION = 3.0
TOLERANCE = 0.10  # |measured - predicted| / predicted, per-token latency
PROMPT = "Name three uses of a bicycle, with a sentence on each."


def write_profile(path, draft_s: float, prefill_s: float, verify_base_s: float, verify_per_token_s: float):
    """A profile without edge prefill costs (the first block's budget covers the prompt) and without batching."""
    path.write_text(yaml.safe_dump({
        "name": path.stem,
        "device": {"draft_model": "draft", "draft_seconds_per_token": draft_s, "prefill_seconds_per_token": prefill_s,
                   "draft_power_w": 5.0, "transmit_power_w": 1.0},
        "edge": {"target_model": "target", "verify_base_seconds": verify_base_s,
                 "verify_seconds_per_token": verify_per_token_s, "prefill_seconds_per_token": 0.0},
        "acceptance": {"per_token": 0.7}}))
    return path


@pytest.fixture(scope="module")
def paced_edge(prepared, data_dir, tmp_path_factory):
    """Two edges: one on a profile this machine can follow at D, one on a profile no machine can."""
    folder = tmp_path_factory.mktemp("pacing")
    # Budgets well above this CPU's real step times (a 135M llama.cpp block ~0.1 s, its first one with the prompt
    # ~0.6 s; a draft token ~0.02 s, the prompt ~0.005 s per token).
    slow = write_profile(folder / "followable.yaml", draft_s=0.03, prefill_s=0.005, verify_base_s=0.4,
                         verify_per_token_s=0.01)
    fast = write_profile(folder / "too-fast.yaml", draft_s=1e-6, prefill_s=0.0, verify_base_s=1e-6,
                         verify_per_token_s=0.0)
    edges = {}
    try:
        for name, profile in (("followable", slow), ("too-fast", fast)):
            edges[name] = EdgeProcess(["--engine", "llamacpp", "--data-dir", str(data_dir), "--metrics-port", "0",
                                       "--profile", str(profile), "--dilation", str(DILATION)],
                                      log_path=folder / f"edge-{name}.log")
            edges[name].start()
        yield {name: (edge, load_profile(folder / f"{name}.yaml"), folder / f"{name}.yaml")
               for name, edge in edges.items()}
    finally:
        for edge in edges.values():
            edge.stop()


def edge_metric(edge: EdgeProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def paced_run(edge: EdgeProcess, profile, draft) -> tuple:
    pacer = Pacer(DILATION)
    engine = PacedDraftEngine(draft, profile.device, pacer)
    connection = EdgeConnection(edge.address)
    try:
        result = decode_speculative(FixedRoute(connection), engine, draft.encode_chat(PROMPT), SamplingConfig(),
                                    max_tokens=24, draft_length=4, parallel=False, stop_ids=[])
    finally:
        connection.close()
    return result, pacer


def test_paced_per_token_latency_matches_the_profile(paced_edge, draft):
    edge, profile, _ = paced_edge["followable"]
    result, pacer = paced_run(edge, profile, draft)
    # SD runs its rounds back to back: draft the block token by token, then verify it (loopback, no link); the
    # device prefills the prompt first.  (Each round also prefills the one or two tokens the verdict committed
    # beyond the last draft: ~1% here, inside the tolerance.)
    prompt = len(draft.encode_chat(PROMPT))
    predicted = profile.device.prefill_seconds_per_token * (prompt - 1) + sum(
        length * profile.device.draft_seconds_per_token + profile.edge.block_seconds(length)
        for length in result.block_lengths)
    measured = pacer.undilated(result.elapsed)
    tokens = len(result.token_ids)
    assert tokens == 24 and result.rounds == len(result.block_lengths) > 0
    error = abs(measured - predicted) / predicted
    REPORT["pacing"] = {"dilation": DILATION, "ms_per_token_measured": 1000 * measured / tokens,
                        "ms_per_token_predicted": 1000 * predicted / tokens, "relative_error": error}
    assert error < TOLERANCE, (f"{measured / tokens * 1000:.1f} ms/token measured vs {predicted / tokens * 1000:.1f} "
                               f"predicted by the profile ({error:.1%} off)")
    assert pacer.steps == result.drafted_sent and pacer.overruns == 0
    assert edge_metric(edge, "tandem_edge_pacing_steps_total") >= result.rounds
    assert edge_metric(edge, "tandem_edge_pacing_overruns_total") == 0


def test_generate_against_a_paced_edge_reports_emulated_time(paced_edge):
    """The edge says it is paced (GetInfo); `tandem generate --profile` paces drafting like the profile's phone at
    the same D and reports every time emulated, wall / D, labelled so, with the efficiency of its rounds."""
    edge, profile, path = paced_edge["followable"]
    done = run_tandem("generate", "--edge", edge.address, "--profile", str(path), "--max-tokens", "12",
                      "--ignore-eos", "--json", PROMPT)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["clock"] == f"emulated (D={DILATION:g})"
    assert summary["elapsed_s"] == pytest.approx(summary["wall_elapsed_s"] / DILATION)
    # Drafting paced like the profile's phone: its median step is the profile's, in emulated seconds.
    assert summary["draft_token_s"] == pytest.approx(profile.device.draft_seconds_per_token, rel=0.1)
    assert 0 < summary["efficiency"] <= 1.0
    assert sum(summary["breakdown_s"].values()) == pytest.approx(summary["elapsed_s"])
    unpaced = run_tandem("generate", "--edge", edge.address, "--max-tokens", "4", PROMPT)
    assert unpaced.returncode == 0 and "times are emulated" in unpaced.stderr and "give --profile" in unpaced.stderr


class ShortBlocks(FixedRoute):
    """A route that asks for blocks shorter than the session's longest, as the controller's draft-length lever does."""

    def __init__(self, edge, length: int) -> None:
        super().__init__(edge)
        self.length = length

    def draft_length(self, longest: int) -> int:
        return min(self.length, longest)


def test_psd_drafts_ahead_only_the_rounds_block_and_its_bonus_guess(paced_edge, draft):
    """A verification takes ~14 draft tokens here: a device asked for k = 2 in a session whose longest is 8 drafts
    at most k + 1 tokens ahead per round (the guessed bonus and the next block), not up to the session's longest —
    drafting further only made it finish a token after the verdict came."""
    edge, profile, _ = paced_edge["followable"]
    pacer = Pacer(DILATION)
    connection = EdgeConnection(edge.address)
    k = 2
    try:
        result = decode_speculative(ShortBlocks(connection, k), PacedDraftEngine(draft, profile.device, pacer),
                                    draft.encode_chat(PROMPT), SamplingConfig(), max_tokens=24, draft_length=8,
                                    parallel=True, stop_ids=[])
    finally:
        connection.close()
    assert len(result.token_ids) == 24 and set(result.block_lengths) <= {1, 2}
    # Each round drafts at most its block and k + 1 ahead (pacer.steps counts every drafted token).
    assert sum(result.block_lengths) <= pacer.steps <= result.rounds * (2 * k + 1), (pacer.steps, result.rounds)
    assert 0 <= result.speculation_kept <= result.rounds


def test_steps_faster_than_the_machine_are_counted_as_overruns(paced_edge, draft):
    edge, profile, _ = paced_edge["too-fast"]
    result, pacer = paced_run(edge, profile, draft)
    assert pacer.steps == result.drafted_sent > 0
    assert pacer.overruns == pacer.steps and pacer.overrun_fraction == 1.0
    steps = edge_metric(edge, "tandem_edge_pacing_steps_total")
    assert steps >= result.rounds and edge_metric(edge, "tandem_edge_pacing_overruns_total") == steps


def test_pacing_off_is_todays_behaviour():
    pacer = Pacer(0.0)
    assert not pacer.enabled and pacer.remaining(0.0, 10.0) == 0.0 and pacer.steps == 0
    assert pacer.undilated(4.0) == 4.0
    with pytest.raises(ValueError):
        Pacer(0.5)
