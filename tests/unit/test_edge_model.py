"""The one edge model (tandem/edge_model.py) on synthetic inputs with known answers, as the estimator, the twin and
the evaluation use it: batched step times, an oversubscribed step divided by weight, idle users holding nothing,
and an evaluation replicate without completions refused."""

from __future__ import annotations

import numpy as np
import pytest

from controller.estimator import EdgeState, UserState, edge_round_seconds, pair_costs
from controller.twin.evaluate import EvaluationError, EvaluationSettings, Job, aggregate
from edge_server.pacing import EdgePacing
from tandem.edge_model import EdgeTiming, edge_rounds, fair_tokens, round_given, round_of, steps_between_services
from tandem.pacing import Pacer
from tandem.profiles import EdgeProfile

EDGE = EdgeProfile(target_model="t", verify_base_seconds=0.01, verify_seconds_per_token=0.002,
                   prefill_seconds_per_token=0.0001,
                   batch_scaling=({"blocks": 1, "relative_time": 1.0}, {"blocks": 5, "relative_time": 2.0}))


def test_a_step_takes_the_profiles_batched_time_as_the_edges_pacing_holds_it():
    timing = EdgeTiming(EDGE, compute_scale=0.5, step_tokens=32)
    block = 0.01 + 0.002 * 5  # k = 4: five positions
    assert timing.step_seconds(1, 4) == pytest.approx(block / 0.5)
    assert timing.step_seconds(3, 4) == pytest.approx(block * 1.5 / 0.5)  # rel(3) interpolates 1 -> 2 over 1..5
    assert timing.step_seconds(9, 4) == pytest.approx(block * 3.0 / 0.5)  # past the last point: extrapolated
    assert timing.step_seconds(2, 4, prefill_tokens=100) == pytest.approx((block * 1.25 + 0.01) / 0.5)
    pacing = EdgePacing(timing, Pacer(0.0))
    assert pacing.block_step_seconds([("a", 100, 4), ("b", 0, 2)]) == pytest.approx(
        float(timing.step_seconds(2, 4, prefill_tokens=100)))


def test_an_oversubscribed_step_divides_the_budget_by_weight():
    demand = np.array([5.0, 5.0, 5.0])
    # 15 tokens wait, 10 fit: weight 2:1:1 gives 5, 2.5, 2.5 tokens per step -> served every 1, 2, 2 steps.
    assert fair_tokens(demand, np.array([0.5, 0.25, 0.25]), 10) == pytest.approx([5.0, 2.5, 2.5])
    assert steps_between_services(demand, np.array([0.5, 0.25, 0.25]), 10) == pytest.approx([1.0, 2.0, 2.0])
    # Equal weights: 10/3 each, every user served every 1.5 steps.
    assert steps_between_services(demand, np.ones(3), 10) == pytest.approx([1.5] * 3)
    # What a capped user leaves goes to the others (max-min fair): 2 tokens need only 2.
    assert fair_tokens(np.array([2.0, 5.0, 5.0]), np.array([0.8, 0.1, 0.1]), 10) == pytest.approx([2.0, 4.0, 4.0])
    # A step always takes its first block, whatever the budget (llama.cpp's default budget of 1 token).
    assert steps_between_services(demand, np.ones(3), 1) == pytest.approx([3.0] * 3)


def test_weights_change_nothing_when_the_waiting_blocks_fit_one_step():
    timing = EdgeTiming(EDGE, step_tokens=64)
    args = dict(draft=np.full(3, 0.01), comm=np.full(3, 0.005), hit=np.full(3, 0.3), draft_lengths=np.full(3, 4))
    equal = edge_rounds(timing, weights=np.ones(3) / 3, parallel=True, **args)
    skewed = edge_rounds(timing, weights=np.array([0.98, 0.01, 0.01]), parallel=True, **args)
    assert skewed.round_s == pytest.approx(equal.round_s)
    tight = EdgeTiming(EDGE, step_tokens=5)  # one block per step: now the weights decide who waits
    favoured = edge_rounds(tight, weights=np.array([0.5, 0.25, 0.25]), parallel=True, **args)
    assert favoured.round_s[0] < favoured.round_s[1] == pytest.approx(favoured.round_s[2])
    # 2:1:1 of one block per step: user 0 in every other step, the others every fourth.
    assert favoured.cycle_s == pytest.approx(np.array([2, 4, 4]) * float(tight.step_seconds(1, 4)))


def test_a_lone_user_never_waits_for_its_own_step():
    timing = EdgeTiming(EDGE)
    alone = edge_rounds(timing, np.array([0.001]), np.array([0.02]), np.array([1.0]), np.array([4]), np.ones(1), True)
    assert alone.remote_s[0] == pytest.approx(0.02 + float(timing.step_seconds(1, 4)))
    crowd = edge_rounds(timing, np.full(4, 0.001), np.full(4, 0.02), np.ones(4), np.full(4, 4), np.ones(4), True)
    # Others' steps are in flight sometimes: a block waits beyond its own step, and steps batch several blocks.
    assert crowd.remote_s[0] > 0.02 + crowd.step_s[0] and crowd.blocks_per_step[0] > 1


def _users(pending: list[int]) -> list[UserState]:
    return [UserState(u, se_up=(2.0,), se_down=(4.0,), draft_s_per_token=0.01, acceptance=0.7, draft_length=4,
                      pending_tokens=p, rtt_s=0.01) for u, p in enumerate(pending)]


def test_a_psd_round_drafts_the_bonus_guess_ahead_or_finishes_the_token_in_progress():
    """k = 4 at 40 ms a draft token (the testbed's phone): a kept speculation needs k + 1 tokens drafted ahead; a
    failed one waits out half a token while the device is still drafting ahead, none once it stopped."""
    draft, token = 0.16, 0.04
    assert round_given(draft, token, 0.145, True, True) == pytest.approx(0.2)  # the 5th token, not the verdict
    assert round_given(draft, token, 0.145, False, True) == pytest.approx(0.16 + 0.145 + 0.02)
    assert round_given(draft, token, 0.3, True, True) == pytest.approx(0.3)  # verification-bound
    assert round_given(draft, token, 0.3, False, True) == pytest.approx(0.46)  # stopped before the verdict
    assert round_given(draft, token, 0.19, False, True) == pytest.approx(0.35 + 0.5 * 0.04 * 0.25)  # the ramp
    assert round_given(draft, token, 0.145, True, False) == pytest.approx(0.305)  # sd: always in sequence
    assert round_of(draft, token, 0.145, 0.25, True) == pytest.approx(0.25 * 0.2 + 0.75 * 0.325)


def test_idle_users_hold_no_compute():
    edges = [EdgeState(0, 1e6, EdgeTiming(EDGE, step_tokens=8), 16)]
    one = np.array([0])
    alone = pair_costs(_users([100]), edges)
    crowded = pair_costs(_users([100, 0, 0, 0, 0, 0]), edges)  # five idle users on the same edge
    by_itself = edge_round_seconds(alone, one, one * 0, np.ones(1), np.ones(1))[0][0]
    rows = np.arange(6)
    # The idle ones even hold most of the scheduler weight and half the bandwidth: the busy user's round is the
    # same, as its blocks are the only ones in the steps.
    rounds = edge_round_seconds(crowded, rows, rows * 0, np.full(6, 1 / 6), np.array([0.01] + [0.198] * 5))[0]
    equal_bandwidth = edge_round_seconds(alone, one, one * 0, np.full(1, 1 / 6), np.ones(1))[0][0]
    assert rounds[0] == pytest.approx(equal_bandwidth)
    assert by_itself <= rounds[0] < by_itself * 1.01  # only the link share differs (1/6 of a ~100 B/round link)


def _summary(completed: int, time_in_system: float) -> dict:
    return {"completed": completed, "unfinished": 1, "mean_latency_s": time_in_system if completed else float("nan"),
            "p95_latency_s": 1.0, "mean_ttft_s": 0.1, "mean_energy_j": 1.0, "migrations": 0,
            "mean_time_in_system_s": time_in_system}


def test_a_replicate_without_completions_is_an_error():
    settings = EvaluationSettings(scenario=None, traces=("t",), seeds=(1, 2), users=(4,), edges=(2,), modes=("psd",),
                                  energy_weights=(0.0,), policies=("tma-opt", "max-sinr-hysteresis"), checkpoint=None)
    results = [(Job(4, 2, None, "psd", 0, seed, policy, None), _summary(3, 2.0 + seed))
               for seed in (1, 2) for policy in settings.policies]
    rows = aggregate(settings, results)
    assert rows[0]["policies"]["tma-opt"]["reduction_vs_baseline"]["n"] == 2  # every replicate counted
    results[-1] = (results[-1][0], _summary(0, 9.0))
    with pytest.raises(EvaluationError, match="max-sinr-hysteresis completed no request in replicate trace 0, "
                                              "seed 2"):
        aggregate(settings, results)


def _observation(acceptance: float, draft_s: float, scale: float, longest: int = 8):
    from controller.policies.base import Observation

    edge = EdgeState(0, 20e6, EdgeTiming(EDGE, compute_scale=scale), 8)
    users = tuple(UserState(u, se_up=(4.0,), se_down=(4.0,), draft_s_per_token=draft_s, acceptance=acceptance,
                            draft_length=4, pending_tokens=200, rtt_s=0.01, max_draft_length=longest)
                  for u in range(2))
    return Observation(0, (edge,), users)


def test_the_draft_length_lever_follows_acceptance_and_the_edge():
    from controller.policies import make_policy

    def lengths(observation) -> list[int]:
        decision = make_policy("tma-equal", draft_lengths="tuned").decide(observation)
        decision.check(observation)
        return [a.draft_length for a in decision.allocations]

    # Drafts that are never accepted: every round emits one token whatever k, so the shortest block is best.
    assert lengths(_observation(acceptance=0.0, draft_s=0.01, scale=1.0)) == [1, 1]
    # Drafts always accepted, drafting cheap beside a slow edge: the longest block the device drafts.
    assert lengths(_observation(acceptance=1.0, draft_s=0.001, scale=0.05)) == [8, 8]
    assert lengths(_observation(acceptance=1.0, draft_s=0.001, scale=0.05, longest=6)) == [6, 6]
    fixed = make_policy("tma-equal").decide(_observation(acceptance=0.0, draft_s=0.01, scale=1.0))
    assert [a.draft_length for a in fixed.allocations] == [4, 4]  # the lever is off by default


def test_paired_reduction_on_the_testbed_pairs_requests_and_says_when_it_is_not_significant():
    from testbed.compare import describe, paired_reduction

    base = [{"user": u, "seq": s, "latency_s": 10.0 + u + s} for u in range(4) for s in range(5)]
    faster = [{"user": r["user"], "seq": r["seq"], "latency_s": r["latency_s"] * 0.8} for r in base]
    result = paired_reduction(base, faster + [{"user": 9, "seq": 0, "error": "link down"}])
    assert result["reduction"] == pytest.approx(0.2) and result["pairs"] == 20 and result["significant"]
    noisy = [{"user": r["user"], "seq": r["seq"], "latency_s": r["latency_s"] + (3 if r["seq"] % 2 else -3)}
             for r in base]
    unsure = paired_reduction(base, noisy)
    assert not unsure["significant"] and "not significant" in describe("p", "b", unsure, 0.05)
    assert "the twin predicts +5.0%" in describe("p", "b", unsure, 0.05)
