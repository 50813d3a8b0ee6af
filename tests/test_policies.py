"""The control plane's policies on synthetic observations with known answers (pure logic, no daemons)."""

from __future__ import annotations

import numpy as np
import pytest

from controller.estimator import EdgeState, UserState, latency_seconds, pair_costs, tokens_per_round
from controller.policies import available, make_policy
from controller.policies.base import Allocation, Decision, Observation
from controller.policies.tma import EqualShareModel, deferred_acceptance, local_search


def scenario(num_users: int, num_edges: int, seed: int, capacity: int | None = None) -> Observation:
    rng = np.random.default_rng(seed)
    edges = tuple(EdgeState(e, bandwidth_hz=float(rng.choice([10e6, 20e6])), compute=float(rng.uniform(100, 400)),
                            capacity=capacity or num_users) for e in range(num_edges))
    users = tuple(UserState(
        u, se_up=tuple(rng.uniform(0.1, 5, num_edges)), se_down=tuple(rng.uniform(0.2, 5.5, num_edges)),
        draft_s_per_token=float(rng.uniform(0.005, 0.03)), acceptance=float(rng.uniform(0.5, 0.9)), draft_length=4,
        pending_tokens=int(rng.integers(16, 256)), rtt_s=0.01) for u in range(num_users))
    return Observation(slot=7, edges=edges, users=users)


def total_latency(observation: Observation, decision: Decision) -> float:
    costs = pair_costs(list(observation.users), list(observation.edges))
    position = {e.edge: i for i, e in enumerate(observation.edges)}
    by_user = {a.user: a for a in decision.allocations}
    allocations = [by_user[u.user] for u in observation.users]
    return float(latency_seconds(costs, np.arange(len(allocations)), np.array([position[a.edge] for a in allocations]),
                                 np.array([a.bandwidth_share for a in allocations]),
                                 np.array([a.compute_share for a in allocations])).sum())


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


@pytest.mark.parametrize("name", ["max-sinr-equal", "random", "tma-equal", "tma-opt"])
@pytest.mark.parametrize("users, edges, capacity", [(12, 3, None), (10, 3, 4), (30, 5, 8)])
def test_decisions_are_valid_and_deterministic(name, users, edges, capacity):
    observation = scenario(users, edges, seed=users + edges, capacity=capacity)
    decision = make_policy(name, seed=3).decide(observation)
    decision.check(observation)  # every user once, known edges, shares in (0, 1] summing to <= 1 per edge
    assert make_policy(name, seed=3).decide(observation) == decision
    if capacity and name.startswith("tma"):
        counts = np.bincount([a.edge for a in decision.allocations], minlength=edges)
        assert counts.max() <= capacity


def test_decision_check_names_the_problem():
    observation = scenario(2, 2, seed=1)
    bad = Decision(7, (Allocation(0, 0, 0.7, 0.5, 4), Allocation(1, 0, 0.6, 0.5, 4)))
    with pytest.raises(ValueError, match="shares on edge 0 would sum to 1.3"):
        bad.check(observation)
    with pytest.raises(ValueError, match="share must be within"):
        Decision(7, (Allocation(0, 0, float("nan"), 0.5, 4), Allocation(1, 1, 1, 1, 4))).check(observation)
    with pytest.raises(ValueError, match="edge 9 is not one"):
        Decision(7, (Allocation(0, 9, 0.5, 0.5, 4), Allocation(1, 1, 1, 1, 4))).check(observation)
    with pytest.raises(ValueError, match="covers users"):
        Decision(7, (Allocation(0, 0, 0.5, 0.5, 4),)).check(observation)


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
    assert total_latency(observation, equal) <= total_latency(observation, make_policy("max-sinr-equal").decide(observation))
