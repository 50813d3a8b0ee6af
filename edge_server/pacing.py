"""How long an engine step takes on the emulated edge (its hardware profile), for pacing (tandem/pacing.py).

A step verifying n blocks together takes ``relative_time(n)`` times one block of the longest length, plus the
prefill of prefix tokens the session's earlier blocks did not cover (a new prompt, a moved session's context),
all divided by the edge's compute scale (its share of the profiled GPU, as in the twin's scenario).  An exclusive
job (an edge-only token, a teacher-forcing Score) of cost c scores c positions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from tandem.pacing import Pacer
from tandem.profiles import EdgeProfile

SESSIONS_REMEMBERED = 4096  # prefix lengths kept for this many recent sessions (older ones count as new)


class EdgePacing:
    def __init__(self, profile: EdgeProfile, compute_scale: float, pacer: Pacer) -> None:
        if not compute_scale > 0:
            raise ValueError(f"compute scale must be positive, got {compute_scale}")
        self.profile, self.compute_scale, self.pacer = profile, compute_scale, pacer
        self._verified: OrderedDict[str | None, int] = OrderedDict()  # session -> prefix length it covered

    def _prefill_tokens(self, session: str | None, prefix_length: int) -> int:
        covered = self._verified.pop(session, 0)
        self._verified[session] = prefix_length
        while len(self._verified) > SESSIONS_REMEMBERED:
            self._verified.popitem(last=False)
        return prefix_length - covered if prefix_length >= covered else prefix_length

    def block_step_seconds(self, blocks: Sequence[tuple[str | None, int, int]]) -> float:
        """Profile time of one step over ``blocks`` given as (session, prefix length, block length)."""
        longest = max(length for _, _, length in blocks)
        prefill = sum(self._prefill_tokens(session, prefix) for session, prefix, _ in blocks)
        seconds = (self.profile.block_seconds(longest) * self.profile.relative_time(len(blocks))
                   + self.profile.prefill_seconds_per_token * prefill)
        return seconds / self.compute_scale

    def exclusive_seconds(self, cost: float) -> float:
        return (self.profile.verify_base_seconds + self.profile.verify_seconds_per_token * cost) / self.compute_scale

    async def hold(self, started: float, seconds: float) -> None:
        await self.pacer.hold_async(started, seconds)
