"""The compute shares in force on this edge: set by the controller (EdgeControl), read by the scheduler.

Until a controller sets shares (version 0) every flow has the same weight.  Once shares are set, a user's weight
is its share, and a user without one (not associated here, or a session opened without a user) is served
best-effort at ``BEST_EFFORT_WEIGHT``: below any share a controller gives, but never zero, so nobody starves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tandem.shares import MAX_VERSION, check_shares

BEST_EFFORT_WEIGHT = 1e-3
DEFAULT_WEIGHT = 1.0


@dataclass(frozen=True)
class Weight:
    value: float
    best_effort: bool


class ComputeShares:
    def __init__(self, edge: int = 0) -> None:
        self._edge = edge  # only for the share rule's messages: every share here is on this edge
        self.version = 0
        self._shares: dict[int, float] = {}

    def set(self, version: int, shares: Mapping[int, float]) -> bool:
        """Replace the shares with those of decision ``version``; False (nothing changed) for the version in force.
        ValueError naming the first problem: an old or zero version, a share out of range, a sum over 1."""
        if not 1 <= version <= MAX_VERSION:
            raise ValueError(f"version must lie in [1, {MAX_VERSION}], got {version}")
        if version < self.version:
            raise StaleVersion(f"version {version} is older than the shares in force (version {self.version})")
        if version == self.version:
            return False
        check_shares(((user, self._edge, share) for user, share in shares.items()), {self._edge}, "this edge")
        self.version, self._shares = version, dict(shares)
        return True

    def weight(self, user: int | None) -> Weight:
        if self.version == 0:
            return Weight(DEFAULT_WEIGHT, False)
        share = self._shares.get(user) if user is not None else None
        return Weight(share, False) if share is not None else Weight(BEST_EFFORT_WEIGHT, True)

    def snapshot(self) -> dict[int, float]:
        return dict(self._shares)


class StaleVersion(ValueError):
    """A decision older than the one in force (a controller that restarted from an older state, a late retry)."""
