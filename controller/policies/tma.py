"""Two-phase matching association (TMA), with equal shares (``tma-equal``) or solver-optimal shares (``tma-opt``).

Only users with a request are matched: idle users hold nothing on an edge (tandem/edge_model.py), so each simply
waits on the edge where a request would fare best beside the matched ones (a request that arrives there has no
context to move yet).

Phase 1, deferred acceptance (Gale-Shapley, users proposing): every user ranks the edges by its estimated latency
on each when that edge is full; edges rank users the same way and keep the best ones within their capacity.  The
result has no blocking pair for those rankings.

Phase 2, local search on the estimated total latency with equal shares: the best single move (a user to another
edge with room) or pairwise swap (two users on different edges trade places) is applied while it lowers the total
by more than a relative 1e-9.  A swap keeps every edge's size, so its gain is one table lookup per pair; the whole
phase is a few numpy passes, even for hundreds of users.

``tma-opt`` then gives each edge's users the bandwidth shares that minimise their summed latency with the edge's
batched verification held at its equal-share value (docs/controller.md has the formulation): the closed form of
sequential rounds (shares proportional to the square root of each user's weighted time at the whole bandwidth)
and, for parallel rounds, the convex epigraph problem solved by SLSQP from that start.  Its scheduler weights
(compute shares) follow the closed form of an oversubscribed edge, ∝ √(rounds left × block tokens); they change
nothing on an edge whose blocks fit one step.  The result is kept only where it beats equal shares, so
``tma-opt`` is never worse than ``tma-equal`` on the estimator.  A user in an outage on its edge (no rate) gets
the minimum share: no share can help it, and the solver would otherwise pour the edge into it.

With ``draft_lengths="tuned"`` each busy user's draft length is then set by the draft-length lever
(``draft_length.py``); by default every user drafts the length its device asks for.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.optimize import minimize

from controller.estimator import PairCosts, edge_round_seconds, equal_share_rounds, pair_costs
from controller.policies.base import Allocation, Decision, Observation, Policy
from controller.policies.baselines import equal_shares
from controller.policies.draft_length import check_draft_lengths, tune_draft_lengths
from tandem.shares import proportional_shares

OUTAGE_ROUND_S = 1e6  # stands in for an infinite round (outage) so that sums and comparisons stay finite
MIN_SHARE = 1e-3


def _finite(values: np.ndarray) -> np.ndarray:
    return np.minimum(np.nan_to_num(values, nan=OUTAGE_ROUND_S, posinf=OUTAGE_ROUND_S), OUTAGE_ROUND_S)


class EqualShareModel:
    """Latency of user u on edge e when e is shared equally by n users with a request: rounds left × the edge
    model's round (estimator.equal_share_rounds), plus n·move to build its context there if it is not there."""

    def __init__(self, costs: PairCosts, parallel: bool) -> None:
        self.costs, self.parallel = costs, parallel
        self.move = _finite(costs.move)
        self.shape = costs.comm.shape

    def latency(self, n: np.ndarray) -> np.ndarray:
        """[U, E] latency of every user on every edge if that edge had ``n[e]`` users."""
        rounds = _finite(equal_share_rounds(self.costs, n, self.parallel))
        return self.costs.weight[:, None] * rounds + n[None, :] * self.move

    def total(self, association: np.ndarray, num_edges: int) -> float:
        n = np.bincount(association, minlength=num_edges).astype(float)
        return float(self.latency(n)[np.arange(len(association)), association].sum())


def deferred_acceptance(model: EqualShareModel, capacity: np.ndarray) -> np.ndarray:
    """Phase 1.  Users rejected everywhere (only when the capacities sum to fewer than the users) stay with
    their first choice beyond its capacity."""
    num_users, num_edges = model.shape
    full = model.latency(np.maximum(1, np.minimum(capacity, num_users)).astype(float))  # [U, E]
    preferences = np.lexsort((np.broadcast_to(np.arange(num_edges), full.shape), full), axis=1)
    next_choice = np.zeros(num_users, dtype=int)
    held: list[list[int]] = [[] for _ in range(num_edges)]
    association = np.full(num_users, -1)
    free = list(range(num_users - 1, -1, -1))
    while free:
        user = free.pop()
        if next_choice[user] >= num_edges:
            association[user] = preferences[user, 0]
            continue
        edge = int(preferences[user, next_choice[user]])
        next_choice[user] += 1
        held[edge].append(user)
        association[user] = edge
        if len(held[edge]) > capacity[edge]:
            worst = max(held[edge], key=lambda u: (full[u, edge], u))
            held[edge].remove(worst)
            association[worst] = -1
            free.append(worst)
    return association


def local_search(model: EqualShareModel, association: np.ndarray, capacity: np.ndarray,
                 max_steps: int | None = None) -> np.ndarray:
    """Phase 2: best move or swap while the estimated total falls."""
    association = association.copy()
    num_users, num_edges = model.shape
    users = np.arange(num_users)
    for _ in range(max_steps or 4 * num_users + 10):
        n = np.bincount(association, minlength=num_edges).astype(float)
        now = model.latency(n)  # [U, E] at the current sizes
        mine = now[users, association]
        total = mine.sum()
        # Swap u <-> v: sizes unchanged, gain = new costs of both minus their current costs.
        at_other = now[:, association]  # [u, v]: u's latency on v's edge
        swap = at_other + at_other.T - mine[:, None] - mine[None, :]
        swap[association[:, None] == association[None, :]] = np.inf
        # Move u -> e: u's edge a loses a user (the others now share among n_a - 1), e gains one (with room).
        smaller, larger = model.latency(np.maximum(n - 1, 1)), model.latency(n + 1)
        members = np.zeros((num_users, num_edges), dtype=bool)
        members[users, association] = True
        now_sum = np.where(members, now, 0.0).sum(axis=0)  # [E] each edge's total now
        smaller_sum = np.where(members, smaller, 0.0).sum(axis=0)  # [E] its members' total with one user fewer
        larger_sum = np.where(members, larger, 0.0).sum(axis=0)  # [E] and with one more
        leave = smaller_sum[association] - smaller[users, association] - now_sum[association]
        move = leave[:, None] + (larger_sum - now_sum)[None, :] + larger
        move[users, association] = np.inf
        move[:, n >= capacity] = np.inf
        best_swap = np.unravel_index(np.argmin(swap), swap.shape)
        best_move = np.unravel_index(np.argmin(move), move.shape)
        gain_swap, gain_move = swap[best_swap], move[best_move]
        if min(gain_swap, gain_move) >= -1e-9 * max(total, 1e-12):
            break
        if gain_swap <= gain_move:
            u, v = best_swap
            association[u], association[v] = association[v], association[u]
        else:
            u, e = best_move
            association[u] = e
    return association


def _with_outages(costs: PairCosts, members: np.ndarray, edge: int, solve) -> tuple[np.ndarray, np.ndarray]:
    """Members in an outage on this edge (no rate: no share can help them) get MIN_SHARE; ``solve`` shares the
    rest among the reachable ones (shares summing to 1, scaled to what is left)."""
    count = len(members)
    reachable = np.isfinite(costs.comm[members, edge])
    b, c = np.full(count, MIN_SHARE), np.full(count, MIN_SHARE)
    if reachable.any():
        budget = 1.0 - MIN_SHARE * (count - reachable.sum())
        rb, rc = solve(members[reachable])
        b[reachable], c[reachable] = rb * budget, rc * budget
    return proportional_shares(b), proportional_shares(c)  # nobody below the share rule's floor


def optimal_shares(costs: PairCosts, members: np.ndarray, edge: int, parallel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bandwidth and compute shares of one edge's ``members`` minimising their summed estimated latency, never
    worse than equal shares."""
    equal = np.full(len(members), 1.0 / len(members))
    verify = dict(zip(members.tolist(), _verify_seconds(costs, members, edge, equal, equal, parallel)))
    b, c = _with_outages(costs, members, edge, lambda reachable: _reachable_shares(
        costs, reachable, edge, np.array([verify[m] for m in reachable.tolist()]), parallel))
    return (b, c) if _summed_latency(costs, members, edge, b, c, parallel) <= _summed_latency(
        costs, members, edge, equal, equal, parallel) else (equal, equal)


def _estimate(costs: PairCosts, members: np.ndarray, edge: int, b: np.ndarray, c: np.ndarray,
              parallel: bool) -> tuple[np.ndarray, np.ndarray]:
    return edge_round_seconds(costs, members, np.full(len(members), edge), b, c, parallel)


def _verify_seconds(costs: PairCosts, members: np.ndarray, edge: int, b: np.ndarray, c: np.ndarray,
                    parallel: bool) -> np.ndarray:
    """Each member's wait for its verdict at the edge (remote minus its link time) at these shares."""
    remote = _estimate(costs, members, edge, b, c, parallel)[1]
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(remote - costs.comm[members, edge] / b - costs.rtt[members], nan=0.0, posinf=0.0)


def _summed_latency(costs: PairCosts, members: np.ndarray, edge: int, b: np.ndarray, c: np.ndarray,
                    parallel: bool) -> float:
    return float((costs.weight[members] * _finite(_estimate(costs, members, edge, b, c, parallel)[0])).sum())


def _sqrt_shares(costs: PairCosts, members: np.ndarray, edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequential rounds: minimise sum w a/b with sum b = 1 -> b ~ sqrt(w a); an oversubscribed edge serves u
    every (k_u + 1) / (c_u S) steps: minimise sum w (k + 1) / c -> c ~ sqrt(w (k + 1))."""
    w = costs.weight[members]
    return proportional_shares(np.sqrt(w * costs.comm[members, edge])), proportional_shares(
        np.sqrt(w * (costs.k[members] + 1)))


def _reachable_shares(costs: PairCosts, members: np.ndarray, edge: int, verify: np.ndarray,
                      parallel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shares (summing to 1) of members that all have a finite rate to the edge, their verification held at
    ``verify`` seconds."""
    w, comm, hit = costs.weight[members], costs.comm[members, edge], costs.hit[members]
    draft, fixed = costs.draft[members], costs.rtt[members] + verify
    b0, c0 = _sqrt_shares(costs, members, edge)
    if not parallel or len(members) == 1:
        return b0, c0
    n = len(members)

    def mixed(b, t):  # hit · max(draft, remote) + (1 − hit) · (draft + remote), with t >= max(draft, remote)
        return hit * t + (1 - hit) * (draft + comm / b + fixed)

    scale = max(float((w * mixed(b0, np.maximum(draft, comm / b0 + fixed))).sum()), 1e-12)

    # Epigraph: variables (b, t); minimise sum w mixed(b, t), t >= draft, t >= comm/b + fixed, sum b <= 1.
    def objective(z):
        return float(w @ mixed(z[:n], z[n:])) / scale

    def objective_grad(z):
        b = z[:n]
        return np.concatenate([-w * (1 - hit) * comm / b ** 2, w * hit]) / scale

    def remote_slack(z):
        return z[n:] - (comm / z[:n] + fixed)

    def remote_slack_jac(z):
        return np.hstack([np.diag(comm / z[:n] ** 2), np.eye(n)])

    start = np.concatenate([b0, np.maximum(draft, comm / b0 + fixed)])
    constraints = [
        {"type": "ineq", "fun": remote_slack, "jac": remote_slack_jac},
        {"type": "ineq", "fun": lambda z: 1.0 - z[:n].sum(), "jac": lambda z: np.r_[-np.ones(n), np.zeros(n)]},
    ]
    bounds = [(MIN_SHARE, 1.0)] * n + [(float(d), None) for d in draft]
    result = minimize(objective, start, jac=objective_grad, bounds=bounds, constraints=constraints, method="SLSQP",
                      options={"maxiter": 200, "ftol": 1e-10})
    b = np.clip(result.x[:n], MIN_SHARE, 1.0)
    b = b / b.sum()  # solver round-off must not break the share rule
    return (b, c0) if _summed_latency(costs, members, edge, b, c0, True) < _summed_latency(
        costs, members, edge, b0, c0, True) else (b0, c0)


class TmaEqual(Policy):
    """TMA association of the users with a request, equal shares."""

    name = "tma-equal"
    from_caller: ClassVar[frozenset[str]] = frozenset({"parallel"})

    def __init__(self, seed: int = 0, parallel: bool = True, draft_lengths: str = "fixed") -> None:
        super().__init__(seed)
        self.parallel, self.draft_lengths = parallel, check_draft_lengths(draft_lengths)

    def _finish(self, observation: Observation, decision: Decision) -> Decision:
        """The draft-length lever (``draft_lengths="tuned"``), on top of the association and shares."""
        if self.draft_lengths == "fixed":
            return decision
        return tune_draft_lengths(observation, decision, self.parallel)

    def associate(self, observation: Observation) -> tuple[np.ndarray, PairCosts]:
        costs = pair_costs(list(observation.users), list(observation.edges))
        association = np.zeros(len(observation.users), dtype=int)
        if not observation.users:
            return association, costs
        num_edges = len(observation.edges)
        busy = np.flatnonzero(costs.busy)
        capacity = np.array([e.capacity for e in observation.edges])
        if len(busy):
            model = EqualShareModel(costs.of_users(busy), self.parallel)
            association[busy] = local_search(model, deferred_acceptance(model, capacity), capacity)
        idle = np.flatnonzero(~costs.busy)
        if len(idle):
            load = np.bincount(association[busy], minlength=num_edges).astype(float)
            joined = EqualShareModel(costs.of_users(idle), self.parallel).latency(load + 1)
            association[idle] = np.argmin(joined, axis=1)  # ties: the first edge
        return association, costs

    def decide(self, observation: Observation) -> Decision:
        return self._finish(observation, equal_shares(observation, self.associate(observation)[0]))


class TmaOpt(TmaEqual):
    """TMA association, then each edge's shares from the convex problem (never worse than equal shares)."""

    name = "tma-opt"

    def decide(self, observation: Observation) -> Decision:
        association, costs = self.associate(observation)
        equal = equal_shares(observation, association)
        bandwidth = np.array([a.bandwidth_share for a in equal.allocations])
        compute = np.array([a.compute_share for a in equal.allocations])
        for edge in range(len(observation.edges)):
            members = np.flatnonzero(association == edge)
            if len(members) > 1:
                bandwidth[members], compute[members] = optimal_shares(costs, members, edge, self.parallel)
        return self._finish(observation, Decision(observation.slot, tuple(
            Allocation(user.user, observation.edges[e].edge, float(b), float(c), user.draft_length)
            for user, e, b, c in zip(observation.users, association.tolist(), bandwidth, compute))))
