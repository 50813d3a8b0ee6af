"""The control plane's policies on synthetic observations with known answers (pure logic, no daemons)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from controller.estimator import EdgeState, UserState, pair_costs, tokens_per_round
from controller.policies import available, make_policy
from controller.policies.base import Allocation, Decision, Observation
from controller.policies.tma import EqualShareModel, deferred_acceptance, local_search
from harness.scenarios import edge_timing


def scenario(num_users: int, num_edges: int, seed: int, capacity: int | None = None) -> Observation:
    rng = np.random.default_rng(seed)
    # edge ids 10, 20, ... differ from their positions, as they may in a topology
    edges = tuple(EdgeState(10 * (e + 1), bandwidth_hz=float(rng.choice([10e6, 20e6])),
                            timing=edge_timing(float(rng.uniform(0.05, 0.2))),
                            capacity=capacity or num_users) for e in range(num_edges))
    users = tuple(UserState(
        u, se_up=tuple(rng.uniform(0.1, 5, num_edges)), se_down=tuple(rng.uniform(0.2, 5.5, num_edges)),
        draft_s_per_token=float(rng.uniform(0.005, 0.03)), acceptance=float(rng.uniform(0.5, 0.9)), draft_length=4,
        pending_tokens=int(rng.integers(16, 256)), rtt_s=0.01) for u in range(num_users))
    return Observation(slot=7, edges=edges, users=users)


def total_latency(observation: Observation, decision: Decision) -> float:
    return float(decision.estimated_latency(observation).sum())


def test_tokens_per_round():
    assert tokens_per_round(np.array([0.0]), np.array([4]))[0] == 1.0
    assert tokens_per_round(np.array([1.0]), np.array([4]))[0] == 5.0
    assert abs(tokens_per_round(np.array([0.5]), np.array([2]))[0] - 1.75) < 1e-12  # 1 + 0.5 + 0.25


def test_builtin_policies_are_registered_and_unknown_ones_refused():
    assert {"max-sinr-equal", "random", "tma-equal", "tma-opt"} <= set(available())
    with pytest.raises(ValueError, match="unknown policy 'nope'.*tma-opt"):
        make_policy("nope")
    with pytest.raises(ValueError, match="policy random"):
        make_policy("random", colour="blue")


def test_what_the_caller_knows_goes_only_to_the_policies_that_take_it():
    known = {"parallel": False, "twin": object()}
    assert make_policy("tma-opt", known=known).parallel is False
    assert make_policy("tma-opt", known={"parallel": None}).parallel is True  # None: not known
    make_policy("max-sinr-equal", known=known)  # takes neither
    with pytest.raises(ValueError, match="policy tma-equal"):  # the caller's to give, not a parameter's as well
        make_policy("tma-equal", known=known, parallel=True)


@pytest.mark.parametrize("name", ["max-sinr-equal", "random", "tma-equal", "tma-opt"])
@pytest.mark.parametrize("users, edges, capacity", [(12, 3, None), (10, 3, 4), (30, 5, 8)])
def test_decisions_are_valid_and_deterministic(name, users, edges, capacity):
    observation = scenario(users, edges, seed=users + edges, capacity=capacity)
    decision = make_policy(name, seed=3).decide(observation)
    decision.check(observation)  # every user once, known edges, shares in (0, 1] summing to <= 1 per edge
    assert make_policy(name, seed=3).decide(observation) == decision
    if capacity and name.startswith("tma"):
        counts = np.bincount([a.edge // 10 - 1 for a in decision.allocations], minlength=edges)
        assert counts.max() <= capacity


def test_decision_check_names_the_problem():
    observation = scenario(2, 2, seed=1)
    bad = Decision(7, (Allocation(0, 10, 0.7, 0.5, 4), Allocation(1, 10, 0.6, 0.5, 4)))
    with pytest.raises(ValueError, match="shares on edge 10 would sum to 1.3"):
        bad.check(observation)
    with pytest.raises(ValueError, match="share must be within"):
        Decision(7, (Allocation(0, 10, float("nan"), 0.5, 4), Allocation(1, 20, 1, 1, 4))).check(observation)
    with pytest.raises(ValueError, match="edge 9 is not one"):
        Decision(7, (Allocation(0, 9, 0.5, 0.5, 4), Allocation(1, 20, 1, 1, 4))).check(observation)
    with pytest.raises(ValueError, match="covers users"):
        Decision(7, (Allocation(0, 10, 0.5, 0.5, 4),)).check(observation)


def test_observations_are_validated_and_no_users_is_a_valid_slot():
    observation = scenario(3, 2, seed=1)
    with pytest.raises(ValueError, match="one spectral efficiency per edge"):
        Observation(0, observation.edges, (replace(observation.users[0], se_up=(1.0,)),))
    with pytest.raises(ValueError, match="at least one edge"):
        Observation(0, (), ())
    empty = Observation(0, observation.edges, ())
    for name in available():
        assert make_policy(name).decide(empty).allocations == ()


def test_an_edge_is_not_poured_into_a_user_in_outage():
    observation = scenario(2, 1, seed=2)
    users = (replace(observation.users[0], se_up=(0.0,), se_down=(0.0,)), observation.users[1])
    decision = make_policy("tma-opt").decide(Observation(0, observation.edges, users))
    shares = {a.user: (a.bandwidth_share, a.compute_share) for a in decision.allocations}
    assert shares[1][0] >= 0.5 and shares[1][1] >= 0.5


def equal_share_model(num_users: int, num_edges: int, seed: int, capacity: int) -> tuple[EqualShareModel, np.ndarray]:
    observation = scenario(num_users, num_edges, seed, capacity=capacity)
    costs = pair_costs(list(observation.users), list(observation.edges))
    return EqualShareModel(costs, parallel=True), np.full(num_edges, capacity)


@pytest.mark.parametrize("seed", range(5))
def test_deferred_acceptance_respects_capacity_and_leaves_no_blocking_pair(seed):
    model, capacity = equal_share_model(14, 4, seed, capacity=4)
    association = deferred_acceptance(model, capacity)
    assert (np.bincount(association, minlength=4) <= capacity).all()
    full = model.latency(capacity.astype(float))  # the rankings phase 1 uses
    for user in range(14):
        for edge in range(4):
            if full[user, edge] < full[user, association[user]]:  # u prefers edge ...
                held = np.flatnonzero(association == edge)
                # ... so edge must be full of users it ranks at least as high as u
                assert len(held) == capacity[edge] and all(full[h, edge] <= full[user, edge] for h in held)


@pytest.mark.parametrize("seed", range(5))
def test_local_search_never_increases_the_total(seed):
    model, capacity = equal_share_model(20, 4, seed, capacity=7)
    start = deferred_acceptance(model, capacity)
    totals = [model.total(start, 4)]
    association = start
    for _ in range(30):
        association = local_search(model, association, capacity, max_steps=1)
        totals.append(model.total(association, 4))
    assert all(b <= a + 1e-9 * a for a, b in zip(totals, totals[1:]))
    assert (np.bincount(association, minlength=4) <= capacity).all()


@pytest.mark.parametrize("seed", range(6))
def test_tma_opt_is_never_worse_than_tma_equal_and_tma_beats_max_sinr(seed):
    observation = scenario(24, 4, seed)
    opt, equal = make_policy("tma-opt").decide(observation), make_policy("tma-equal").decide(observation)
    assert total_latency(observation, opt) <= total_latency(observation, equal) * (1 + 1e-9)
    max_sinr = make_policy("max-sinr-equal").decide(observation)
    assert total_latency(observation, equal) <= total_latency(observation, max_sinr)


def _two_edges(slot: int, se_down: list[tuple[float, float]], pending: list[int] | None = None,
               compute: tuple[float, float] = (0.1, 0.1)) -> Observation:
    edges = tuple(EdgeState(10 * (e + 1), 20e6, edge_timing(compute[e]), 8) for e in range(2))
    users = tuple(UserState(u, se_up=(2.0, 2.0), se_down=se, draft_s_per_token=0.02, acceptance=0.7,
                            draft_length=4, pending_tokens=(pending or [64] * len(se_down))[u], rtt_s=0.01)
                  for u, se in enumerate(se_down))
    return Observation(slot, edges, users)


def _edges_of(decision: Decision) -> list[int]:
    return [a.edge for a in sorted(decision.allocations, key=lambda a: a.user)]


def test_max_sinr_hysteresis_hands_over_after_the_time_to_trigger_and_ignores_small_gains():
    policy = make_policy("max-sinr-hysteresis", offset_db=3.0, time_to_trigger=3)
    # se 4.0 ~ 11.8 dB, 5.0 ~ 14.9 dB (+3.1 dB), 4.5 ~ 13.3 dB (+1.5 dB)
    assert _edges_of(policy.decide(_two_edges(0, [(4.0, 1.0), (4.0, 4.5)]))) == [10, 20]
    for slot in (1, 2):  # edge 20 is 3.1 dB better for user 0: not yet
        assert _edges_of(policy.decide(_two_edges(slot, [(4.0, 5.0), (4.0, 4.5)]))) == [10, 20]
    assert _edges_of(policy.decide(_two_edges(3, [(4.0, 5.0), (4.5, 4.0)]))) == [20, 20]  # 3rd slot in a row
    for slot in range(4, 10):  # user 1: edge 10 better by only 1.5 dB: never hands over
        assert _edges_of(policy.decide(_two_edges(slot, [(4.0, 5.0), (4.5, 4.0)])))[1] == 20
    assert _edges_of(policy.decide(_two_edges(10, [(4.0, 0.0), (4.5, 4.0)])))[0] == 10  # outage: moves at once
    bare = make_policy("max-sinr-equal")
    assert _edges_of(bare.decide(_two_edges(11, [(4.0, 4.5), (4.5, 4.0)]))) == [20, 10]  # the strawman flips
    with pytest.raises(ValueError, match="time_to_trigger"):
        make_policy("max-sinr-hysteresis", time_to_trigger=0)


def test_a_broken_candidate_streak_starts_again():
    policy = make_policy("max-sinr-hysteresis", offset_db=3.0, time_to_trigger=2)
    policy.decide(_two_edges(0, [(4.0, 1.0)]))
    policy.decide(_two_edges(1, [(4.0, 5.0)]))  # better once
    policy.decide(_two_edges(2, [(4.0, 4.0)]))  # not better: the streak ends
    assert _edges_of(policy.decide(_two_edges(3, [(4.0, 5.0)]))) == [10]  # better once again: not yet
    assert _edges_of(policy.decide(_two_edges(4, [(4.0, 5.0)]))) == [20]


def test_least_loaded_spreads_pending_work_by_compute():
    policy = make_policy("least-loaded")
    even = policy.decide(_two_edges(0, [(4.0, 4.0)] * 4))
    assert sorted(_edges_of(even)) == [10, 10, 20, 20]
    skewed = policy.decide(_two_edges(0, [(4.0, 4.0)] * 4, compute=(0.3, 0.1)))
    assert sorted(_edges_of(skewed)) == [10, 10, 10, 20]  # three times the compute, three times the work
    covered = policy.decide(_two_edges(0, [(4.0, 0.0)] * 3))
    assert _edges_of(covered) == [10, 10, 10]  # only where there is coverage
    heavy = policy.decide(_two_edges(0, [(4.0, 4.0)] * 3, pending=[300, 100, 100]))
    assert _edges_of(heavy) == [10, 20, 20]  # the longest request first, then the others balance it
    even.check(_two_edges(0, [(4.0, 4.0)] * 4))  # the share rule holds
