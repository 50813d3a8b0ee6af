"""The one rule for shares of an edge's resources (bandwidth, compute): who may hold which.

A share is a number in [``MIN_SHARE``, 1]; the shares on one edge sum to at most 1 (plus ``SHARE_SLACK``: shares
computed by a solver may sum to 1 plus rounding); a share is held on an edge that exists.  The link emulator
(bandwidth shares, from its config and from the controller), the edges (compute shares, ``EdgeControl.SetShares``)
and the controller's policy decisions (bandwidth and compute) check them here, so that no two components disagree
on what a valid decision is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the share rule itself needs no numpy
    import numpy as np

SHARE_SLACK = 1e-9
# The smallest share: the slowest link the emulator and the edges must model.  A ten-thousandth of an edge is a
# user all but starved (at 20 MHz and 1 bit/s/Hz, 2 kbit/s: a 16 KiB chunk in a minute), yet a rate the shaper's
# arithmetic and the edges' fair-queueing tags carry exactly.  Below it nothing is gained, and a tiny or denormal
# share (1e-300, 5e-324) made arrival times of ~1e298 s or inf: a link stuck for good, OverflowError per chunk.
MIN_SHARE = 1e-4
# Decision versions stay far below the wire's uint64 limit: one a slot for ten thousand years is under 2**42, and a
# version near the limit (a forged SetShares) must not make the controller count past it.
MAX_VERSION = 2**53


def floored(shares: list[float], minimums: list[float]) -> list[float]:
    """The shares of one edge's members, each raised to its minimum, the excess of the others over theirs scaled
    down to pay for it (their sum then stays at most 1, as long as the minimums sum to at most 1)."""
    deficit = sum(max(0.0, least - share) for share, least in zip(shares, minimums))
    excess = sum(max(0.0, share - least) for share, least in zip(shares, minimums))
    # Raising every share to its minimum adds `deficit`; what the total then exceeds 1 by comes out of the excess
    # (never more than the excess while the minimums alone sum to at most 1).
    over = max(0.0, sum(shares) + deficit - 1.0)
    keep = 1.0 - over / excess if excess > 0 else 1.0
    return [least + (share - least) * keep if share > least else least for share, least in zip(shares, minimums)]


def proportional_shares(weights) -> "np.ndarray":
    """Shares of one edge in proportion to non-negative ``weights``, summing to 1, those that would fall below
    MIN_SHARE raised to it (``floored``; shares already above it are left as they are): what a policy computing
    shares from weights (a solver, a learned correction) hands out, so that its decision holds the rule however
    uneven the weights are."""
    import numpy as np

    weights = np.nan_to_num(np.asarray(weights, dtype=float), nan=0.0).clip(min=0.0)
    count = len(weights)
    if np.isinf(weights).any():  # infinitely heavy members share everything: the rest keep the floor
        weights = np.isinf(weights).astype(float)
    spread = weights / weights.sum() if weights.sum() > 0 else np.full(count, 1.0 / max(count, 1))
    return np.array(floored(spread.tolist(), [MIN_SHARE] * count))


def check_shares(held: Iterable[tuple[int, int, float]], edges: Collection[int], where: str = "") -> None:
    """``held``: (user, edge, share) triples.  Raises ValueError naming the first rule broken."""
    totals: dict[int, float] = defaultdict(float)
    for user, edge, share in sorted(held):
        if edge not in edges:
            known = ", ".join(map(str, sorted(edges)))
            raise ValueError(f"user {user}: edge {edge} is not one {where or 'that is known'} (edges: {known})")
        if not MIN_SHARE <= share <= 1:  # NaN compares false: refused too
            raise ValueError(f"user {user}: share must be within [{MIN_SHARE:g}, 1] (MIN_SHARE: the slowest link "
                             f"modelled), got {share:g}")
        totals[edge] += share
    for edge, total in sorted(totals.items()):
        if total > 1 + SHARE_SLACK:
            raise ValueError(f"the shares on edge {edge} would sum to {total:g} > 1")
