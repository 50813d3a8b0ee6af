"""The fastest a device drafting one chain can decode on a profile: the optimal schedule of parallel speculative
decoding, found exactly, as the ceiling the benches hold the psd variants to (bench/psd_ceiling.py, bench/psd.py).

The model is the one of ``device_client/speculation.py`` with every choice left open.  Each drafted token is accepted
with probability ``alpha``, independently (the profile's ``acceptance.per_token``); a draft step takes ``draft_s``
and is not stopped once started; a block of n tokens comes back as a verdict ``round_trip(n)`` after it is sent (link
and verification).  One block is in flight.  A round starts with ``r`` drafts ready that the last verdict left valid
and chooses:

- ``n``, how many tokens to send (drafting ``n - r`` more first when r < n), and
- ``a``, how many draft steps to start while the block is in flight (each must start before the verdict).  They
  continue the chain as if the block and the draft's guess of the bonus token were accepted, like every psd bet.

The round commits (1 - alpha^(n+1)) / (1 - alpha) tokens on average and takes (n - r)+ t_draft + max(round trip,
a t_draft).  With probability alpha^(n+1) the bet holds (every token accepted and the guess of the bonus right): the
drafts beyond the block, less the guess the verdict replaces, are the next round's ``r``; otherwise the next round
starts from nothing.  Rounds from nothing are renewals, so the least mean time per token is the ratio

    lambda* = min over policies E[time of a cycle] / E[tokens of a cycle]

where a cycle runs from one round with nothing ready to the next.  Dinkelbach's method finds it: for a guess lambda,
value iteration over r gives the policy with the least E[time - lambda tokens]; evaluating that policy exactly gives
the next guess.  sd (``a = 0``, ``n = k``) and the device's one-chain schedules as device_client/decoding.py runs
them (post; pre: ``n = 1`` from nothing, ``n = r`` after a hold; adaptive: ``n`` and ``a`` by expected pay-off)
are all policies of this model, so none beats its optimum.  Two things are not: ``psd_seconds_per_token``, the
closed form the adaptive length uses, approximates post (it charges a held round max(k t_draft, round trip)
although the hold needs k + 1 steps ahead) and can come out faster than this optimum; and ``branch`` drafts a
second chain, on a correction, which this model does not have.  The round trip is fixed for a block length: the
model's device knows when its verdict comes, a real one only expects it.

``round_trip_after_hold`` relaxes the model towards several blocks in flight: a block sent after a hold may take
less time (e.g. no link at all, as if it had been sent before the verdict came).  That is an optimistic bound on
pipelining, not a schedule of it.  Drafting two branches at once (a batch of two on the phone) is outside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from device_client.speculation import expected_tokens

RoundTrip = Callable[[int], float]
MOST_ALPHA = 0.99  # the most acceptance a measured figure is read as: the model needs alpha < 1


def model_alpha(measured: float | None) -> float:
    """An acceptance measured on real requests, as the model takes it: none measured reads as 0, and a link or a
    request with no rejection (1.0) as MOST_ALPHA."""
    return min(MOST_ALPHA, measured or 0.0)


@dataclass(frozen=True)
class Optimum:
    """The optimal schedule: its mean seconds per committed token and its choice ``(n, a)`` per drafts ready."""

    seconds_per_token: float
    policy: dict[int, tuple[int, int]]


@dataclass(frozen=True)
class _Choices:
    """Every (n, a) open to a round with some drafts ready, as arrays."""

    choice: list[tuple[int, int]]
    seconds: np.ndarray
    tokens: np.ndarray
    hold: np.ndarray  # probability that the next round starts in state ``ready``
    ready: np.ndarray  # the state after a hold: drafts ready, or ``held`` (none, but the bonus guess held)


def _choices(ready_now: int, alpha: float, first: float, draft_s: float, round_trip: RoundTrip, longest: int,
             most_ready: int, held: int) -> _Choices:
    """``first``: the acceptance of the block's first token (``alpha`` when it continues a draft that held)."""
    rows = []
    for n in range(1, longest + 1):
        flight = round_trip(n)
        left = max(0, ready_now - n)
        a = 0
        while True:
            seconds = max(0, n - ready_now) * draft_s + max(flight, a * draft_s)
            ahead = left + a  # drafts beyond the block; the first is the guess of the bonus token
            ready = min(most_ready, ahead - 1) if ahead >= 2 else held if ahead == 1 else 0
            tokens = 1 + first * expected_tokens(alpha, n - 1)  # the edge's token + sum of first alpha^(i-1)
            rows.append(((n, a), seconds, tokens, first * alpha ** n if ready else 0.0, ready))
            if a * draft_s >= flight:  # the next step would start after the verdict: not a step ahead
                break
            a += 1
    return _Choices([r[0] for r in rows], np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                    np.array([r[3] for r in rows]), np.array([r[4] for r in rows], dtype=int))


def optimal_chain(alpha: float, draft_s: float, round_trip: RoundTrip, longest: int = 10,
                  round_trip_after_hold: RoundTrip | None = None, tolerance: float = 1e-10,
                  first_alpha: float | None = None) -> Optimum:
    """The least mean seconds per token of any one-chain schedule with blocks of at most ``longest`` tokens.
    ``first_alpha``: the acceptance of the first token drafted after an edge's token (a correction or a bonus)
    when it differs from the rest, as when acceptance comes in runs (default ``alpha``: independent)."""
    first = alpha if first_alpha is None else first_alpha
    if not (0.0 <= alpha < 1.0 and 0.0 <= first < 1.0):
        raise ValueError(f"alpha and first_alpha must be in [0, 1), not {alpha} and {first}")
    if draft_s <= 0:
        raise ValueError(f"draft_s must be positive, not {draft_s}")
    # States 0..most_ready: drafts ready (0: after a failed bet, a renewal); ``held``: none ready, but the bet held
    # on the bonus guess alone, so the next block's first token follows an accepted draft (alpha, not first).
    most_ready = 2 * longest
    held = most_ready + 1
    after_hold = round_trip_after_hold or round_trip
    states = [_choices(r, alpha, first if r == 0 else alpha, draft_s, round_trip if r == 0 else after_hold, longest,
                       most_ready, held) for r in range(most_ready + 1)]
    states.append(_choices(0, alpha, alpha, draft_s, round_trip, longest, most_ready, held))  # nothing to pre-send
    size = len(states)

    def best(lam: float) -> list[int]:
        """Value iteration on E[time - lam tokens] until the cycle ends; the index of each state's best choice."""
        value = np.zeros(size)  # value[0] stays 0: a round from nothing starts the next cycle
        for _ in range(100_000):
            new = np.zeros_like(value)
            for r in range(1, size):
                c = states[r]
                new[r] = np.min(c.seconds - lam * c.tokens + c.hold * value[c.ready])
            converged = np.max(np.abs(new - value)) < tolerance * max(1.0, lam)
            value = new
            if converged:
                return [int(np.argmin(c.seconds - lam * c.tokens + c.hold * value[c.ready])) for c in states]
        raise RuntimeError(f"value iteration did not converge (alpha {alpha}, first_alpha {first})")

    def evaluate(picks: list[int]) -> float:
        """Exact E[time] / E[tokens] of a cycle under a policy (two linear systems over the states)."""
        transition = np.zeros((size, size))
        seconds = np.zeros(size)
        tokens = np.zeros(size)
        for r, (c, i) in enumerate(zip(states, picks)):
            seconds[r], tokens[r] = c.seconds[i], c.tokens[i]
            if c.ready[i]:
                transition[r, c.ready[i]] = c.hold[i]
        transition[:, 0] = 0.0  # reaching nothing ready ends the cycle
        system = np.eye(size) - transition
        return float(np.linalg.solve(system, seconds)[0] / np.linalg.solve(system, tokens)[0])

    # sd with one token takes draft_s + round_trip(1) per round of at least one token: an upper bound to start from.
    lam = draft_s + round_trip(1)
    for _ in range(100):
        picks = best(lam)
        new = evaluate(picks)
        converged = abs(new - lam) <= tolerance * lam
        lam = new
        if converged:
            return Optimum(lam, {r: states[r].choice[i] for r, i in enumerate(picks) if r <= longest})
    raise RuntimeError(f"Dinkelbach's iteration did not converge (alpha {alpha}, first_alpha {first})")


def sd_seconds_per_token(alpha: float, draft_s: float, round_trip: RoundTrip, longest: int,
                         first_alpha: float | None = None) -> float:
    """sd at its best draft length in 1..longest: k t_draft + round trip per round of 1 + first alpha^0 + ... +
    first alpha^(k-1) tokens (every sd block starts after an edge's token)."""
    first = alpha if first_alpha is None else first_alpha
    return min((k * draft_s + round_trip(k)) / (1 + first * expected_tokens(alpha, k - 1))
               for k in range(1, longest + 1))


def fit_runs(accepted_lengths: Sequence[int], block_lengths: Sequence[int]) -> tuple[float, float] | None:
    """(first_alpha, alpha) by maximum likelihood from blocks verified from scratch (sd's): how often a block's
    first token is accepted, and how often a token is accepted after an accepted one.  None without the data."""
    first_tried = first_kept = tried = kept = 0
    for accepted, block in zip(accepted_lengths, block_lengths):
        first_tried += 1
        first_kept += accepted >= 1
        tried += min(accepted, block - 1)  # tokens 2..block tried after an accepted one
        kept += max(0, accepted - 1)
    if not first_tried or not tried:
        return None
    return first_kept / first_tried, kept / tried


def gain_ceiling(alpha: float, draft_s: float, round_trip: RoundTrip, longest: int,
                 round_trip_after_hold: RoundTrip | None = None, first_alpha: float | None = None) -> dict:
    """sd at its best length, the optimal one-chain psd schedule (both with blocks of at most ``longest``), and the
    ratio: the most any psd variant can gain over the strongest sd in this model."""
    sd = sd_seconds_per_token(alpha, draft_s, round_trip, longest, first_alpha)
    best = optimal_chain(alpha, draft_s, round_trip, longest, round_trip_after_hold, first_alpha=first_alpha)
    return {"sd_s_per_token": sd, "optimal_psd_s_per_token": best.seconds_per_token,
            "optimal_over_sd": sd / best.seconds_per_token,
            "optimal_policy": {str(ready): list(choice) for ready, choice in best.policy.items()}}


def acceptance_for_gain(gain: float, draft_s: float, round_trip: RoundTrip, longest: int) -> float | None:
    """The least per-token acceptance at which the optimal schedule reaches ``gain`` over sd, to 0.001; None when
    none in [0, 0.99] does.  The ratio is not monotone (at high acceptance sd's long blocks catch up), so a scan in
    steps of 0.01 finds the first crossing and bisection refines it."""
    def reaches(alpha: float) -> bool:
        return gain_ceiling(alpha, draft_s, round_trip, longest)["optimal_over_sd"] >= gain

    grid = [step / 100 for step in range(100)]
    high = next((alpha for alpha in grid if reaches(alpha)), None)
    if high is None or high == 0.0:
        return high
    low = high - 0.01
    while high - low > 0.001:
        middle = (low + high) / 2
        low, high = (middle, high) if not reaches(middle) else (low, middle)
    return high


def runs_ceiling(accepted_lengths: Sequence[int], block_lengths: Sequence[int], draft_s: float,
                 round_trip: RoundTrip, longest: int) -> dict | None:
    """``gain_ceiling`` with acceptance in runs fitted to sd's blocks (``fit_runs``), the fit beside it; None
    without the data."""
    runs = fit_runs(accepted_lengths, block_lengths)
    if runs is None:
        return None
    first, alpha = runs
    return gain_ceiling(model_alpha(alpha), draft_s, round_trip, longest, first_alpha=model_alpha(first)) | {
        "first_alpha": first, "alpha": alpha}
