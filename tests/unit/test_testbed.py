"""Pure logic of the testbed's parts on synthetic inputs: the seeded workload, the edge's and the phone's paced
step times, the pacer's accounting, and the twin replaying given arrivals."""

from __future__ import annotations

import time

import numpy as np
import pytest

from device_client.draft import DraftEngine
from device_client.pacing import PacedDraftEngine
from device_client.workload import Workload, WorkloadError
from edge_server.pacing import EdgePacing
from tandem.edge_model import EdgeTiming
from tandem.pacing import Pacer
from tandem.profiles import DeviceProfile, EdgeProfile
from tandem.readiness import parse_ready

EDGE = EdgeProfile(target_model="t", verify_base_seconds=0.006, verify_seconds_per_token=0.001,
                   prefill_seconds_per_token=0.0001,
                   batch_scaling=({"blocks": 1, "relative_time": 1.0}, {"blocks": 4, "relative_time": 1.3}))
DEVICE = DeviceProfile(draft_model="d", draft_seconds_per_token=0.04, prefill_seconds_per_token=0.002,
                       draft_power_w=7, transmit_power_w=2)


def test_workload_is_seeded_per_user_and_stops_at_until():
    workload = Workload(rate_per_user_s=2.0, until_s=50.0, seed=3)
    first = list(workload.requests(0, 8))
    assert first == list(workload.requests(0, 8))  # same seed, same requests: paired comparisons
    assert first != list(workload.requests(1, 8))
    times = [at for at, _ in first]
    assert times == sorted(times) and times[-1] < 50.0 and all(0 <= p < 8 for _, p in first)
    assert len(times) == pytest.approx(100, rel=0.3)  # Poisson: rate x duration on average
    gaps = np.diff([0.0, *times])
    assert np.mean(gaps) == pytest.approx(0.5, rel=0.3)


def test_workload_prompts(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# a comment\n\nfirst\n  second  \n")
    assert Workload(prompts=prompts).load_prompts() == ["first", "second"]
    prompts.write_text("# nothing\n")
    with pytest.raises(WorkloadError, match="no prompt"):
        Workload(prompts=prompts).load_prompts()


def test_edge_step_time_batches_and_charges_prefill_once():
    pacing = EdgePacing(EdgeTiming(EDGE, compute_scale=0.5), Pacer(0.0))
    block = EDGE.block_seconds(4)  # 0.006 + 0.001 x 5
    # First block of a session: its 100-token prompt is prefilled.
    assert pacing.block_step_seconds([("a", 100, 4)]) == pytest.approx((block + 100 * 0.0001) / 0.5)
    # Next round: 5 more committed tokens, and a second session joins the step (4 blocks cost 1.3 x one at most;
    # 2 cost the interpolation 1.1).
    seconds = pacing.block_step_seconds([("a", 105, 4), ("b", 10, 2)])
    assert seconds == pytest.approx((block * 1.1 + 15 * 0.0001) / 0.5)
    assert pacing.exclusive_seconds(1) == pytest.approx((0.006 + 0.001) / 0.5)


def test_phone_step_time_prefills_what_the_last_call_did_not_cover():
    class Fixed(DraftEngine):
        vocab_size, tokenizer_fingerprint, stop_ids = 4, "x", []

        def encode_chat(self, m):
            return []

        def encode_text(self, t):
            return []

        def decode(self, ids):
            return b""

        def next_logits(self, context):
            return np.zeros(4)

    paced = PacedDraftEngine(Fixed(), DEVICE, Pacer(0.0))
    assert paced.step_seconds(list(range(50))) == pytest.approx(0.04 + 49 * 0.002)  # the prompt
    assert paced.step_seconds(list(range(51))) == pytest.approx(0.04)  # one more token: a decode step
    assert paced.step_seconds([*range(48), 7, 7, 7]) == pytest.approx(0.04 + 2 * 0.002)  # rolled back 3


def test_pacer_holds_to_the_dilated_budget_and_counts_overruns():
    seen = []
    pacer = Pacer(4.0, seen.append)
    started = time.perf_counter()
    pacer.hold(started, 0.01)
    assert time.perf_counter() - started >= 0.04 - 1e-3
    pacer.hold(time.perf_counter() - 1.0, 0.01)  # a step that already took a second: overran 0.04 s
    assert (pacer.steps, pacer.overruns, seen) == (2, 1, [False, True])
    assert pacer.overrun_fraction == 0.5 and pacer.undilated(8.0) == 2.0


def test_readiness_line():
    assert parse_ready('TANDEM-READY {"daemon": "edge", "address": "h:1"}') == {"daemon": "edge", "address": "h:1"}
    for line in ("edge ready on h:1", "TANDEM-READY {not json", 'TANDEM-READY {"address": "h:1"}',
                 "TANDEM-READY []"):
        assert parse_ready(line) is None


def test_twin_replays_given_arrivals(tmp_path, umi_trace):
    from controller.policies import make_policy
    from controller.twin.scenario import load_scenario
    from controller.twin.simulator import DigitalTwin
    from tandem.profiles import load_profile
    from tandem.trace_format import load_trace
    from harness.scenarios import write_twin_scenario

    scenario = load_scenario(write_twin_scenario(tmp_path, umi_trace))
    trace, profile = load_trace(scenario.trace), load_profile(scenario.profile)
    arrivals = {0: [0.05, 1.0], 2: [0.5]}
    run = DigitalTwin(scenario, trace, profile, arrivals=arrivals, trace_offset=7).run(make_policy("tma-opt"))
    played = sorted((r.user, r.arrival) for r in run.completed + run.unfinished)
    assert played == [(0, 0.05), (0, 1.0), (2, 0.5)]  # exactly the given arrivals, finished or not by the end
    assert {(r.user, r.arrival) for r in run.completed} >= {(0, 0.05), (2, 0.5)}
