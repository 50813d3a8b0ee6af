"""How long an engine step takes on the emulated edge, for pacing (tandem/pacing.py): the step time of the one
edge model (tandem/edge_model.py) that the controller's estimator and the twin use too.

A step verifying n blocks together takes ``relative_time(n)`` times one block of the longest length, plus the
prefill of prefix tokens the session's earlier blocks did not cover (a new prompt, a moved session's context),
all divided by the edge's compute scale (its share of the profiled GPU).  An exclusive job (an edge-only token, a
teacher-forcing Score) of cost c scores c positions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from tandem.edge_model import EdgeTiming
from tandem.pacing import Pacer

SESSIONS_REMEMBERED = 4096  # prefix lengths kept for this many recent sessions (older ones count as new)


class EdgePacing:
    def __init__(self, timing: EdgeTiming, pacer: Pacer) -> None:
        self.timing, self.pacer = timing, pacer
        self._verified: OrderedDict[str | None, int] = OrderedDict()  # session -> prefix length it covered

    def _prefill_tokens(self, session: str | None, prefix_length: int) -> int:
        covered = self._verified.pop(session, 0)
        self._verified[session] = prefix_length
        while len(self._verified) > SESSIONS_REMEMBERED:
            self._verified.popitem(last=False)
        return prefix_length - covered if prefix_length >= covered else prefix_length

    def block_step_seconds(self, blocks: Sequence[tuple[str | None, int, int]]) -> float:
        """Profile time of one step over ``blocks`` given as (session, prefix length, block length)."""
        # A block of length L scores L + 1 positions: the edge model's "longest" counts drafted tokens.
        longest = max(length for _, _, length in blocks)
        prefill = sum(self._prefill_tokens(session, prefix) for session, prefix, _ in blocks)
        return float(self.timing.step_seconds(len(blocks), longest, prefill))

    def exclusive_seconds(self, cost: float) -> float:
        profile = self.timing.profile
        return (profile.verify_base_seconds + profile.verify_seconds_per_token * cost) / self.timing.compute_scale

    async def hold(self, started: float, seconds: float) -> None:
        await self.pacer.hold_async(started, seconds)
