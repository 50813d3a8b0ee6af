"""The latency model of speculative decoding at the edge (ARCHITECTURE §4): one module, used by every policy and
played by the twin; its edge is the one edge model (tandem/edge_model.py) the edges' pacing runs.

A user u on edge e with bandwidth share b and scheduler weight (compute share) c runs rounds of k drafted tokens.
With acceptance rate α a round emits  τ = (1 − α^(k+1)) / (1 − α)  tokens (k + 1 when α = 1), and

    comm    = bits_up(k) / (b · B_e · SE_up(u, e)) + bits_down / (b · B_e · SE_down(u, e)) + rtt
    remote  = comm + T_e + p_e · T_e · max(1/2, 1 − gap/T_e)     the step in flight (another user's, with chance
                                                               p_e), then its own (T_e: a batched step)
    round   = α^(k+1) · max(draft + t_draft, remote)                             psd (drafting overlaps)
              + (1 − α^(k+1)) · (draft + remote + the draft token in progress)
            = draft + remote                                                       sd
    round  ≥ steps_u · T_e                          an oversubscribed edge serves u once every steps_u steps

with draft = k · t_draft, gap the time from a verdict to the user's next block, and T_e, p_e, steps_u from the
edge's users with a request (idle users hold nothing; c
matters only when their blocks overflow the step budget).  The request's remaining latency is pending / τ ×
round.  A pair whose spectral efficiency is 0 (outage) has infinite latency.  Moving a request to another edge
costs a one-off rebuild of its context there (lossless migration re-prefills the prompt and every committed
token): its upload at the uplink rate plus its prefill in a step of that edge; staying costs nothing, so
association does not churn for nothing.  The functions are vectorised over users (numpy arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem.edge_model import EdgeTiming, Rounds, edge_rounds, hit_probability, solve_rounds


BITS_UP_PER_TOKEN = 8 * 6.0  # a drafted token's share of a block message (measured ~21 B per k=4 block)
BITS_DOWN_PER_ROUND = 8 * 20.0  # a verdict (measured ~20 B)


@dataclass(frozen=True)
class EdgeState:
    edge: int
    bandwidth_hz: float  # B_e
    timing: EdgeTiming  # how long its engine steps take
    capacity: int  # most users it may serve at once


@dataclass(frozen=True)
class UserState:
    user: int
    se_up: tuple[float, ...]  # spectral efficiency (bit/s/Hz) to each edge, by edge position; 0 = outage
    se_down: tuple[float, ...]
    draft_s_per_token: float  # t_draft
    acceptance: float  # α in [0, 1]
    draft_length: int  # k, the length the device asks for
    pending_tokens: int  # tokens the current request still has to produce (0: idle, no request)
    bits_up_per_token: float = BITS_UP_PER_TOKEN
    bits_down_per_round: float = BITS_DOWN_PER_ROUND
    rtt_s: float = 0.0  # base round-trip of the radio link and the network behind it
    edge: int | None = None  # position of the edge holding the request's context (None: nowhere yet)
    context_tokens: int = 0  # prompt + committed tokens a move would re-prefill (0: unknown, moves cost nothing)
    bits_per_context_token: float = 8 * 2.0  # packed token ids
    max_draft_length: int | None = None  # the longest block the device drafts (None: draft_length)

    @property
    def busy(self) -> bool:
        return self.pending_tokens > 0


def tokens_per_round(acceptance: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Expected tokens a round emits: accepted drafts plus the correction or bonus token."""
    acceptance = np.asarray(acceptance, dtype=float)
    k = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)
    return np.where(acceptance >= 1.0, k + 1.0, geometric)


def acceptance_from_rate(rate: float, draft_length: float) -> float:
    """α from an observed acceptance rate (accepted / drafted tokens) of blocks of ``draft_length`` tokens.

    The edges and devices count accepted / drafted; the model's α is the chance a drafted token is accepted given
    the earlier ones were.  A k-token block accepts α + α² + … + α^k tokens on average, so the rate is
    α(1 − α^k) / (k(1 − α)), increasing in α: bisection inverts it.  Reading the rate as α under-rates drafts
    (0.51 observed at k = 4 is α = 0.75) and makes the draft-length lever choose blocks too short."""
    rate = min(1.0, max(0.0, float(rate)))
    k = max(1.0, float(draft_length))
    if k == 1.0 or rate in (0.0, 1.0):
        return rate
    low, high = rate, 1.0  # α >= the rate (the rate averages α, α², …)
    for _ in range(50):
        alpha = (low + high) / 2
        if alpha * (1 - alpha ** k) / (k * (1 - alpha)) < rate:
            low = alpha
        else:
            high = alpha
    return (low + high) / 2


@dataclass(frozen=True)
class PairCosts:
    """Per user, and per (user, edge), what a round and a request are made of."""

    draft: np.ndarray  # [U] k · t_draft
    comm: np.ndarray  # [U, E] up + down time at the whole bandwidth (inf in an outage)
    rtt: np.ndarray  # [U]
    weight: np.ndarray  # [U] rounds left: pending / τ (an idle user: one token's worth, to place it sensibly)
    move: np.ndarray  # [U, E] one-off seconds to build the context on e at the whole bandwidth (0 where it is)
    k: np.ndarray  # [U] draft length
    hit: np.ndarray  # [U] α^(k+1): psd's speculation survives the verdict
    busy: np.ndarray  # [U] has a request
    timings: tuple[EdgeTiming, ...]  # [E]

    def of_users(self, rows: np.ndarray) -> "PairCosts":
        """The costs of the users at ``rows`` only."""
        return PairCosts(self.draft[rows], self.comm[rows], self.rtt[rows], self.weight[rows], self.move[rows],
                         self.k[rows], self.hit[rows], self.busy[rows], self.timings)


def pair_costs(users: list[UserState], edges: list[EdgeState]) -> PairCosts:
    k = np.array([u.draft_length for u in users], dtype=float)
    se_up = np.array([u.se_up for u in users], dtype=float).reshape(len(users), len(edges))
    se_down = np.array([u.se_down for u in users], dtype=float).reshape(len(users), len(edges))
    bandwidth = np.array([e.bandwidth_hz for e in edges], dtype=float)
    bits_up = k * np.array([u.bits_up_per_token for u in users])
    bits_down = np.array([u.bits_down_per_round for u in users])
    with np.errstate(divide="ignore"):
        comm = bits_up[:, None] / (bandwidth * se_up) + bits_down[:, None] / (bandwidth * se_down)
    acceptance = np.array([u.acceptance for u in users], dtype=float)
    pending = np.array([u.pending_tokens for u in users], dtype=float)
    context = np.array([u.context_tokens for u in users], dtype=float)
    timings = tuple(e.timing for e in edges)
    # A move: the context's upload, then its prefill (in the step of the first block there).
    prefill = np.stack([t.prefill_seconds(context) for t in timings], axis=1) if edges else np.zeros((len(users), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        move = (context * np.array([u.bits_per_context_token for u in users]))[:, None] / (bandwidth * se_up) \
            + prefill
    move = np.where(context[:, None] > 0, move, 0.0)
    for row, user in enumerate(users):
        if user.edge is not None:
            move[row, user.edge] = 0.0
    return PairCosts(
        draft=k * np.array([u.draft_s_per_token for u in users]),
        comm=comm,
        rtt=np.array([u.rtt_s for u in users], dtype=float),
        weight=np.maximum(pending, 1.0) / tokens_per_round(acceptance, k),
        move=move, k=k, hit=hit_probability(acceptance, k), busy=pending > 0, timings=timings,
    )


def served(costs: PairCosts, users: np.ndarray, edge: int, bandwidth_share: np.ndarray,
            compute_share: np.ndarray, parallel: bool) -> Rounds:
    """The rounds of ``users`` (rows of ``costs``), all on ``edge`` as its users with a request."""
    with np.errstate(divide="ignore", invalid="ignore"):
        comm = costs.comm[users, edge] / bandwidth_share + costs.rtt[users]
    return edge_rounds(costs.timings[edge], costs.draft[users], comm, costs.hit[users], costs.k[users],
                       compute_share, parallel)


def edge_round_seconds(costs: PairCosts, users: np.ndarray, edges: np.ndarray, bandwidth_share: np.ndarray,
                       compute_share: np.ndarray, parallel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(round, remote) seconds of each listed user on its edge at the given shares (arrays of equal length).

    Each edge's service is set by its listed users with a request; an idle listed user is estimated as if it
    joined them (what it would get once its request arrives)."""
    rounds = np.full(len(users), np.inf)
    remote = np.full(len(users), np.inf)
    reachable = (bandwidth_share > 0) & (compute_share > 0) & np.isfinite(costs.comm[users, edges])
    for edge in np.unique(edges):
        on_edge = np.flatnonzero((edges == edge) & reachable)
        if not len(on_edge):
            continue
        busy = costs.busy[users[on_edge]]
        if busy.any():
            rows = on_edge[busy]
            state = served(costs, users[rows], int(edge), bandwidth_share[rows], compute_share[rows], parallel)
            rounds[rows], remote[rows] = state.round_s, state.remote_s
        for idle in on_edge[~busy]:
            group = np.append(on_edge[busy], idle)
            state = served(costs, users[group], int(edge), bandwidth_share[group], compute_share[group], parallel)
            rounds[idle], remote[idle] = state.round_s[-1], state.remote_s[-1]
    return rounds, remote


def round_seconds(costs: PairCosts, users: np.ndarray, edges: np.ndarray, bandwidth_share: np.ndarray,
                  compute_share: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Round time of each listed user on its edge at the given shares (arrays of equal length)."""
    return edge_round_seconds(costs, users, edges, bandwidth_share, compute_share, parallel)[0]


def latency_seconds(costs: PairCosts, users: np.ndarray, edges: np.ndarray, bandwidth_share: np.ndarray,
                    compute_share: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Estimated remaining latency of each listed user's request."""
    return costs.weight[users] * round_seconds(costs, users, edges, bandwidth_share, compute_share, parallel)


def equal_share_rounds(costs: PairCosts, members: np.ndarray, parallel: bool = True) -> np.ndarray:
    """[U, E] round of every user on every edge if ``members[e]`` users with requests like its own shared that edge
    equally (bandwidth 1/n, equal weights): what association searches compare, in a few numpy passes."""
    counts = np.maximum(np.asarray(members, dtype=float), 1.0)
    demand = costs.k + 1.0
    rounds = np.empty_like(costs.comm)
    for edge, (timing, n) in enumerate(zip(costs.timings, counts)):
        # n equal blocks share the budget S (a step always takes its first): each is served every n·(k+1)/S steps.
        steps = np.maximum(1.0, n * demand / np.maximum(float(timing.step_tokens), demand))
        with np.errstate(invalid="ignore"):
            comm = costs.comm[:, edge] * n + costs.rtt
        rounds[:, edge] = solve_rounds(lambda m, timing=timing: timing.step_seconds(m, costs.k),
                                       lambda r, n=n: n / r, n / steps, steps, costs.draft, costs.draft / costs.k,
                                       comm, costs.hit, parallel).round_s
    return rounds
