"""The latency model of speculative decoding at the edge (ARCHITECTURE §4): one module, used by every policy.

A user u served by edge e with bandwidth share b and compute share c runs rounds of k drafted tokens.  With
acceptance rate α a round emits  τ = (1 − α^(k+1)) / (1 − α)  tokens (k + 1 when α = 1), and takes

    up      = bits_up(k) / (b · B_e · SE_up(u, e))
    verify  = W(k) / (c · C_e)                       W(k) = verify work of a k-token block, C_e = work per second
    down    = bits_down / (b · B_e · SE_down(u, e))
    round   = max(k · t_draft, up + verify + down + rtt)      parallel speculative decoding (drafting overlaps)
            = k · t_draft + up + verify + down + rtt           sequential speculative decoding

so the request's remaining latency is  pending / τ × round.  A pair whose spectral efficiency is 0 (outage) has
infinite latency.  Moving a request to another edge costs a one-off rebuild of its context there (lossless
migration re-prefills the prompt and every committed token): its upload at the uplink rate plus its prefill at
the edge's compute; staying where the context is costs nothing, so association does not churn for nothing.
The functions are vectorised over users (numpy arrays) so that policies can evaluate many candidate associations
cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EdgeState:
    edge: int
    bandwidth_hz: float  # B_e
    compute: float  # C_e: verify work per second (work units of ``UserState.verify_work``)
    capacity: int  # most users it may serve at once


@dataclass(frozen=True)
class UserState:
    user: int
    se_up: tuple[float, ...]  # spectral efficiency (bit/s/Hz) to each edge, by edge position; 0 = outage
    se_down: tuple[float, ...]
    draft_s_per_token: float  # t_draft
    acceptance: float  # α in [0, 1]
    draft_length: int  # k
    pending_tokens: int  # tokens the current request still has to produce
    bits_up_per_token: float = 8 * 6.0  # a drafted token's share of a block message (measured ~21 B per k=4 block)
    bits_down_per_round: float = 8 * 20.0  # a verdict (measured ~20 B)
    verify_work_per_token: float = 1.0  # W(k) = verify_work_base + k · verify_work_per_token
    verify_work_base: float = 1.0
    rtt_s: float = 0.0  # base round-trip of the radio link and the network behind it
    edge: int | None = None  # position of the edge holding the request's context (None: nowhere yet)
    context_tokens: int = 0  # prompt + committed tokens a move would re-prefill (0: unknown, moves cost nothing)
    prefill_work_per_token: float = 0.0  # in verify work units
    bits_per_context_token: float = 8 * 2.0  # packed token ids


def tokens_per_round(acceptance: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Expected tokens a round emits: accepted drafts plus the correction or bonus token."""
    acceptance = np.asarray(acceptance, dtype=float)
    k = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)
    return np.where(acceptance >= 1.0, k + 1.0, geometric)


@dataclass(frozen=True)
class PairCosts:
    """Per (user, edge) the parts of a round that shares divide: a round takes
    ``max(draft, comm / b + verify / c + rtt)`` (psd) and a request ``weight`` rounds."""

    draft: np.ndarray  # [U] k · t_draft
    comm: np.ndarray  # [U, E] up + down time at the whole bandwidth (inf in an outage)
    verify: np.ndarray  # [U, E] verify time at the whole compute
    rtt: np.ndarray  # [U]
    weight: np.ndarray  # [U] rounds left: pending / τ
    move: np.ndarray  # [U, E] one-off seconds to build the context on e at the whole resources (0 where it is)


def pair_costs(users: list[UserState], edges: list[EdgeState]) -> PairCosts:
    k = np.array([u.draft_length for u in users], dtype=float)
    se_up = np.array([u.se_up for u in users], dtype=float).reshape(len(users), len(edges))
    se_down = np.array([u.se_down for u in users], dtype=float).reshape(len(users), len(edges))
    bandwidth = np.array([e.bandwidth_hz for e in edges], dtype=float)
    compute = np.array([e.compute for e in edges], dtype=float)
    bits_up = k * np.array([u.bits_up_per_token for u in users])
    bits_down = np.array([u.bits_down_per_round for u in users])
    with np.errstate(divide="ignore"):
        comm = bits_up[:, None] / (bandwidth * se_up) + bits_down[:, None] / (bandwidth * se_down)
    work = np.array([u.verify_work_base for u in users]) + k * np.array([u.verify_work_per_token for u in users])
    acceptance = np.array([u.acceptance for u in users], dtype=float)
    pending = np.array([u.pending_tokens for u in users], dtype=float)
    context = np.array([u.context_tokens for u in users], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        move = (context * np.array([u.bits_per_context_token for u in users]))[:, None] / (bandwidth * se_up) \
            + (context * np.array([u.prefill_work_per_token for u in users]))[:, None] / compute[None, :]
    move = np.where(context[:, None] > 0, move, 0.0)
    for row, user in enumerate(users):
        if user.edge is not None:
            move[row, user.edge] = 0.0
    return PairCosts(
        draft=k * np.array([u.draft_s_per_token for u in users]),
        comm=comm,
        verify=work[:, None] / compute[None, :],
        rtt=np.array([u.rtt_s for u in users], dtype=float),
        weight=pending / tokens_per_round(acceptance, k),
        move=move,
    )


def round_seconds(costs: PairCosts, users: np.ndarray, edges: np.ndarray, bandwidth_share: np.ndarray,
                  compute_share: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Round time of each listed user on its edge at the given shares (arrays of equal length)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        remote = (costs.comm[users, edges] / bandwidth_share + costs.verify[users, edges] / compute_share
                  + costs.rtt[users])
    remote = np.where((bandwidth_share > 0) & (compute_share > 0), remote, np.inf)
    draft = costs.draft[users]
    return np.maximum(draft, remote) if parallel else draft + remote


def latency_seconds(costs: PairCosts, users: np.ndarray, edges: np.ndarray, bandwidth_share: np.ndarray,
                    compute_share: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Estimated remaining latency of each listed user's request."""
    return costs.weight[users] * round_seconds(costs, users, edges, bandwidth_share, compute_share, parallel)
