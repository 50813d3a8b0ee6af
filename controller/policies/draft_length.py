"""The draft-length lever: each user's k from the closed form of ARCHITECTURE §4 on the one edge model.

A longer block emits more tokens per round (τ = (1 − α^(k+1)) / (1 − α)) but takes longer to draft, to send and
to verify, and its speculation survives less often (α^(k+1)).  For every user with a request, on the edge and shares
a decision gives it, the expected seconds per emitted token are

    round(k) / τ(k),   round(k) = h·max((k+1)·t_d, remote(k)) + (1 − h)·(k·t_d + remote(k) + residue),
                       round ≥ steps(k)·T(k)

with the edge's load (blocks per step, the chance another user's step is in flight, how oversubscribed it is)
held at what the decision gives (tandem/edge_model.py); the user gets the k in 1..its longest that minimises them.
One pass per edge, vectorised over users and candidate lengths.  Idle users keep their default length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from controller.estimator import pair_costs, served, tokens_per_round
from controller.policies.base import Allocation, Decision, Observation
from tandem.edge_model import Rounds, gap_seconds, hit_probability, remote_seconds, round_of

LONGEST_CANDIDATE = 16


def tune_draft_lengths(observation: Observation, decision: Decision, parallel: bool = True) -> Decision:
    """``decision`` with every busy user's draft length set to its best on its edge."""
    users = list(observation.users)
    if not users:
        return decision
    by_user = {a.user: a for a in decision.allocations}
    chosen = [by_user[u.user] for u in users]
    position = {e.edge: i for i, e in enumerate(observation.edges)}
    edges = np.array([position[a.edge] for a in chosen])
    b = np.array([a.bandwidth_share for a in chosen])
    c = np.array([a.compute_share for a in chosen])
    costs = pair_costs(users, list(observation.edges))
    lengths = np.array([a.draft_length for a in chosen])
    reachable = np.isfinite(costs.comm[np.arange(len(users)), edges])
    for edge in np.unique(edges):
        rows = np.flatnonzero((edges == edge) & reachable & costs.busy)
        if not len(rows):
            continue
        state = served(costs, rows, int(edge), b[rows], c[rows], parallel)
        timing = observation.edges[edge].timing
        others = np.array([np.delete(costs.k[rows], i).max(initial=0.0) for i in range(len(rows))])[:, None]
        # A k-token block: k tokens' share of the block message up, the verdict down.
        se_up = np.array([users[r].se_up[edge] for r in rows])
        lengths[rows] = best_lengths(
            lambda k, blocks=state.blocks_per_step[:, None], others=others: timing.step_seconds(
                blocks, np.maximum(k, others)),
            state, costs.comm[rows, edge] / b[rows] + costs.rtt[rows],
            np.array([users[r].bits_up_per_token for r in rows]) / (b[rows] * observation.edges[edge].bandwidth_hz
                                                                     * se_up),
            costs.k[rows], costs.draft[rows] / costs.k[rows], np.array([users[r].acceptance for r in rows]),
            np.array([users[r].max_draft_length or users[r].draft_length for r in rows]), parallel)
    return Decision(decision.slot, tuple(
        Allocation(a.user, a.edge, a.bandwidth_share, a.compute_share, int(length))
        for a, length in zip(chosen, lengths)))


def best_lengths(step_of: Callable[[np.ndarray], np.ndarray], state: Rounds, comm: np.ndarray,
                 per_token_up: np.ndarray, current: np.ndarray, token: np.ndarray, acceptance: np.ndarray,
                 longest: np.ndarray, parallel: bool) -> np.ndarray:
    """Each user's k in 1..its ``longest`` with the fewest expected seconds per emitted token, its edge's load held
    at ``state`` (arrays over users, whatever edges they are on).

    ``step_of(k)``: [users, K] the step a block of each candidate length k ([1, K]) joins; ``comm``: the link's
    part of a round at the ``current`` length (uplink + downlink at the user's share, and the rtt);
    ``per_token_up``: a drafted token's upload; ``token``: t_draft."""
    k = np.arange(1, LONGEST_CANDIDATE + 1, dtype=float)[None, :]  # [1, K]
    current, token, acceptance = current[:, None], token[:, None], acceptance[:, None]
    step = step_of(k)
    comm = comm[:, None] + (k - current) * per_token_up[:, None]
    draft = k * token
    hit = hit_probability(acceptance, k)
    remote = remote_seconds(comm, step, state.busy_others[:, None], gap_seconds(draft, token, comm, hit, parallel))
    cycle, step_s = state.cycle_s[:, None], state.step_s[:, None]
    steps = np.where(cycle > step_s * (1 + 1e-9), np.maximum(1.0, cycle / step_s * (k + 1) / (current + 1)), 1.0)
    rounds = np.maximum(round_of(draft, token, remote, hit, parallel), steps * step)
    per_token = rounds / tokens_per_round(acceptance, k)
    per_token[k > longest[:, None]] = np.inf
    return np.argmin(per_token, axis=1) + 1


DRAFT_LENGTHS = ("fixed", "tuned")


def check_draft_lengths(mode: str) -> str:
    """The one rule for a policy's ``draft_lengths`` parameter."""
    if mode not in DRAFT_LENGTHS:
        raise ValueError(f"draft_lengths must be one of {', '.join(DRAFT_LENGTHS)}, got {mode!r}")
    return mode
