"""One model of an edge as it runs, for what the policies optimise (controller/estimator.py), what the twin plays
(controller/twin/) and what the edge's pacing holds each step for (edge_server/pacing.py).

The edge runs engine steps back to back while blocks wait (edge_server/scheduler.py).  A step takes the blocks
waiting, in fair-queueing order, while their tokens fit the step budget S (``step_tokens``); it lasts

    T(m, k) = (block(k) · rel(m) + prefill_per_token · prefill tokens) / compute scale

for m blocks whose longest has k drafted tokens (``block`` and ``rel`` are the hardware profile's single-block time
and batch curve).  Idle users hold nothing: only users with a block in flight are in a step.

A user's block waits out the step in flight, then its own step.  It finds another user's step in flight with
chance p (the edge's time busy with others' blocks, out of the time it is not busy with the user's own: 1 on a
saturated edge).  That step started as the user's own ended — others' blocks were waiting — so it has T − gap
left, gap being the time from a verdict to the user's next block (the link, and the re-draft when psd's
speculation failed); a user back later than half a step finds a random point of it, T/2 left on average:

    remote = comm + T + p · T · max(1/2, 1 − gap/T)

A user has one block in flight at a time, so it never waits for its own step: alone on an edge, remote = comm + T.
On a saturated edge the users fall into groups whose steps alternate, and a round lasts two steps.  When the
blocks in flight need more than S tokens (an oversubscribed edge), the step budget is divided by the scheduler's
weights (max-min fair: a user never gets more than its block needs, what it leaves goes to the others), so user u
is served once every  steps_u = (k_u + 1) / x_u  steps, x_u being its tokens per step: its rounds cannot be shorter
than steps_u · T.  Compute shares are such weights: on an edge whose waiting blocks fit one step they change
nothing.

A round of parallel speculative decoding (the device drafts on, up to k + 1 tokens, while its block is verified)
lasts max(draft + t_draft, remote) when the verdict accepts the whole block and its bonus token is the one the
device guessed (probability α^(k+1)): the next block starts after the guessed bonus, so k + 1 tokens are drafted
ahead.  Otherwise the device finishes the token it is drafting when the verdict comes (half a token on average
while it is still drafting ahead; a phone cannot stop a forward pass half-way), then re-drafts from the corrected
token: draft + remote + that residue.  Sequential rounds always take draft + remote.  (bench/round_cost.py
measures these rounds on a paced edge and device: the first version's max(draft, remote) was 14-15% short at
k = 4 and 8.)  The edge's load (p, the blocks per step m) and the users' rounds depend on each other;
``solve_rounds`` finds them by a damped fixed-point iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tandem.profiles import EdgeProfile

DEFAULT_STEP_TOKENS = 64  # the edge's default step budget for a batching engine (edge_server/config.py)
FIXED_POINT_ITERATIONS = 12


@dataclass(frozen=True)
class EdgeTiming:
    """How long an edge's engine steps take: its hardware profile, its share of that hardware (compute scale) and
    its step budget S in tokens."""

    profile: EdgeProfile
    compute_scale: float = 1.0
    step_tokens: int = DEFAULT_STEP_TOKENS

    def __post_init__(self) -> None:
        if not (np.isfinite(self.compute_scale) and self.compute_scale > 0):
            raise ValueError(f"compute scale must be positive, got {self.compute_scale}")
        if self.step_tokens < 1:
            raise ValueError(f"step_tokens must be at least 1, got {self.step_tokens}")

    def step_seconds(self, blocks: np.ndarray | float, longest: np.ndarray | float,
                     prefill_tokens: np.ndarray | float = 0.0) -> np.ndarray:
        """T(m, k): a step verifying ``blocks`` blocks, the longest of ``longest`` drafted tokens, and prefilling
        ``prefill_tokens`` context tokens."""
        edge = self.profile
        return (edge.block_seconds(np.asarray(longest, dtype=float)) * edge.relative_time(blocks)
                + edge.prefill_seconds_per_token * np.asarray(prefill_tokens, dtype=float)) / self.compute_scale

    def prefill_seconds(self, tokens: np.ndarray | float) -> np.ndarray:
        """The extra time a step takes to prefill ``tokens`` context tokens (a new prompt, a moved session)."""
        return self.profile.prefill_seconds_per_token * np.asarray(tokens, dtype=float) / self.compute_scale


def group_sums(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """[count] the sum of ``values`` over each group (``groups``: a group id per element)."""
    return np.bincount(groups, weights=values, minlength=count)


def group_max(groups: np.ndarray, values: np.ndarray, count: int, empty: float = 0.0) -> np.ndarray:
    """[count] the largest of ``values`` in each group (``empty`` for a group without elements)."""
    largest = np.full(count, empty, dtype=float)
    np.maximum.at(largest, groups, values)
    return largest


def fair_tokens(demand: np.ndarray, weights: np.ndarray, budget: np.ndarray | float,
                groups: np.ndarray | None = None) -> np.ndarray:
    """Tokens per step each user gets when every user keeps a block of ``demand`` tokens waiting: the step budget
    divided by weight, max-min fair (water-filling) — nobody gets more than its block needs.  A block larger than
    the budget still runs (a step always takes its first job), so the budget is at least the largest block.

    ``groups`` (default: one): which edge each user is on, the water-filling of every edge at once (``budget``:
    an array indexed by group id, or one for all); a pass settles or caps members of every group still open."""
    demand = np.asarray(demand, dtype=float)
    weights = np.maximum(np.asarray(weights, dtype=float), 1e-12)
    groups = np.zeros(len(demand), dtype=int) if groups is None else np.asarray(groups, dtype=int)
    budget = np.asarray(budget, dtype=float)
    count = len(budget) if budget.ndim else int(groups.max(initial=-1)) + 1
    left = np.maximum(np.broadcast_to(budget, (count,)), group_max(groups, demand, count))
    tokens = np.zeros_like(demand)
    open_ = np.ones(len(demand), dtype=bool)
    while True:
        live = open_ & (left > 1e-12)[groups]
        if not live.any():
            break
        fill = np.zeros_like(demand)
        fill[live] = left[groups[live]] * weights[live] / group_sums(groups[live], weights[live],
                                                                                   count)[groups[live]]
        capped = live & (fill >= demand - tokens)
        settled = live & (group_sums(groups[capped], np.ones(capped.sum()), count) == 0)[groups]
        tokens[settled] += fill[settled]  # nobody capped: the budget is shared out, the group is done
        left -= group_sums(groups[capped], demand[capped] - tokens[capped], count)
        tokens[capped] = demand[capped]
        open_ &= ~(settled | capped)
    return np.maximum(tokens, 1e-9)


def steps_between_services(demand: np.ndarray, weights: np.ndarray, budget: np.ndarray | float,
                           groups: np.ndarray | None = None) -> np.ndarray:
    """steps_u: engine steps per block of each user on an edge whose users all keep a block waiting (>= 1)."""
    return np.maximum(1.0, np.asarray(demand, dtype=float) / fair_tokens(demand, weights, budget, groups))


def hit_probability(acceptance: np.ndarray, draft_length: np.ndarray) -> np.ndarray:
    """Chance that the device's speculative drafting during verification survives the verdict: the whole block is
    accepted and the bonus token is the one the draft guessed next (α^(k+1))."""
    return np.asarray(acceptance, dtype=float) ** (np.asarray(draft_length, dtype=float) + 1)


@dataclass(frozen=True)
class Rounds:
    """The steady state of users on one edge (arrays broadcast like the inputs)."""

    round_s: np.ndarray  # expected round time
    remote_s: np.ndarray  # block sent -> verdict back when the edge is not the bottleneck
    step_s: np.ndarray  # T of an average step
    busy_others: np.ndarray  # chance a block finds another user's step in flight
    blocks_per_step: np.ndarray  # m
    cycle_s: np.ndarray  # steps_u · T: the shortest round the edge's throughput allows


def drafting_residue(draft: np.ndarray, token: np.ndarray, remote: np.ndarray) -> np.ndarray:
    """psd: how long the device is still busy with the draft token in progress when a verdict arrives — half a
    token on average while it is drafting ahead (k + 1 tokens take draft + token), none once it has stopped (a
    linear ramp over the last token, so that the estimate is smooth in the remote time)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # minimum(maximum()): np.clip's overhead, in a hot loop
        drafting = np.where(token > 0, np.minimum(np.maximum((draft + token - remote) / token, 0.0), 1.0), 0.0)
    return 0.5 * token * drafting


def _kept_and_redrafted(draft: np.ndarray, token: np.ndarray, remote: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """psd's round when its speculation survives (the guessed bonus and the next block were drafted ahead) and when
    it does not (the token in progress finishes, then the re-draft)."""
    return np.maximum(draft + token, remote), draft + remote + drafting_residue(draft, token, remote)


def round_given(draft: np.ndarray, token: np.ndarray, remote: np.ndarray, survived, parallel: bool) -> np.ndarray:
    """One round of ``draft`` = k · ``token`` seconds of drafting and ``remote`` seconds from block to verdict,
    given whether psd's speculation ``survived`` the verdict."""
    if not parallel:
        return draft + remote
    kept, redrafted = _kept_and_redrafted(draft, token, remote)
    return np.where(survived, kept, redrafted)


def round_of(draft: np.ndarray, token: np.ndarray, remote: np.ndarray, hit: np.ndarray, parallel: bool) -> np.ndarray:
    """The expected round: the speculation survives with probability ``hit``."""
    if not parallel:
        return round_given(draft, token, remote, False, parallel)
    kept, redrafted = _kept_and_redrafted(draft, token, remote)
    return hit * kept + (1.0 - hit) * redrafted


def gap_seconds(draft: np.ndarray, token: np.ndarray, comm: np.ndarray, hit: np.ndarray,
                parallel: bool) -> np.ndarray:
    """From a verdict to the user's next block at the edge: the link, and the re-draft (with the token in progress
    at most) when the speculation failed (always, sequentially)."""
    return comm + (1.0 - hit) * (draft + 0.5 * token) if parallel else comm + draft


def remote_seconds(comm: np.ndarray, step: np.ndarray, busy_others: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Block sent -> verdict back: the link, the step in flight when the block arrives (another user's, with chance
    ``busy_others``: it started as the user's own ended — others' blocks were waiting — so it has ``step − gap``
    left, or half a step on average when the user comes back later than that), then its own step."""
    return comm + step + busy_others * step * np.maximum(0.5, 1.0 - gap / step)


def solve_rounds(step_of: Callable[[np.ndarray], np.ndarray], arrival_rate: Callable[[np.ndarray], np.ndarray],
                 fit: np.ndarray, steps: np.ndarray, draft: np.ndarray, token: np.ndarray, comm: np.ndarray,
                 hit: np.ndarray, parallel: bool) -> Rounds:
    """The fixed point of the edge's load and its users' rounds.

    ``step_of(m)``: T of a step of m blocks; ``arrival_rate(rounds)``: blocks per second reaching the edge when its
    users' rounds take ``rounds``; ``fit``: most blocks one step holds (all users' when they fit S); ``steps``:
    steps_u; ``draft``: k · t_draft; ``token``: t_draft; ``comm``: uplink + downlink + base round trip; ``hit``:
    hit_probability."""
    fit = np.maximum(np.asarray(fit, dtype=float), 1.0)
    gap = gap_seconds(draft, token, comm, hit, parallel)
    blocks, busy = fit, np.zeros_like(fit)
    for _ in range(FIXED_POINT_ITERATIONS):
        step = step_of(blocks)
        rounds = np.maximum(round_of(draft, token, remote_seconds(comm, step, busy, gap), hit, parallel), steps * step)
        rate = arrival_rate(rounds)  # blocks per second
        waiting = np.clip(rate * step, 1.0, fit)  # blocks a step finds waiting
        utilization = np.minimum(1.0, rate * step / waiting)
        # The step a block may find in flight is the other users' (a user has one block in flight at a time): the
        # chance the edge is busy with others while it is not busy with this user's own block.
        own = np.divide(1.0 / rounds, rate, out=np.ones_like(rate), where=rate > 0)
        mine = np.minimum(step / rounds, 1.0 - 1e-9)
        blocks = 0.5 * (blocks + waiting)  # damped: the load and the rounds pull each other
        busy = 0.5 * (busy + np.minimum(1.0, utilization * (1.0 - own) / (1.0 - mine)))
    step = step_of(blocks)
    remote = remote_seconds(comm, step, busy, gap)
    rounds = np.maximum(round_of(draft, token, remote, hit, parallel), steps * step)
    return Rounds(rounds, remote, step, busy, blocks, steps * step)


def edge_rounds(timing: EdgeTiming, draft: np.ndarray, comm: np.ndarray, hit: np.ndarray, draft_lengths: np.ndarray,
                weights: np.ndarray, parallel: bool) -> Rounds:
    """The users with a block in flight on one edge (arrays over them), at the scheduler's ``weights``."""
    draft_lengths = np.asarray(draft_lengths, dtype=float)
    demand = draft_lengths + 1
    steps = steps_between_services(demand, weights, timing.step_tokens)
    fit = float((1.0 / steps).sum())  # blocks per step when everybody waits
    longest = float(draft_lengths.max())
    return solve_rounds(lambda m: timing.step_seconds(m, longest), lambda r: np.full_like(r, (1.0 / r).sum()),
                        np.full(len(demand), fit), steps, draft, np.asarray(draft) / draft_lengths, comm, hit,
                        parallel)
