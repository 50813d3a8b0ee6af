"""What the edge observes of each user's drafts: accepted and drafted tokens over its recent verified blocks.

The controller allocates by the acceptance a device reports; a device that under-reports it (0: "every round emits
one token, give me everything") would buy shares with a lie.  The edge verifies every block itself, so it knows
the acceptance first-hand: it reports these counts in ``EdgeLoad`` and the controller prefers them to the report.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

RECENT_BLOCKS = 64  # per user: the window the counts cover
MAX_USERS = 4096  # users remembered; the least recently verified are forgotten first


@dataclass(frozen=True)
class DraftCounts:
    drafted: int
    accepted: int
    rejected_blocks: int  # blocks a rejected token cut short (one failed trial each: α = accepted / (accepted + it))


class DraftObservations:
    def __init__(self, recent_blocks: int = RECENT_BLOCKS, max_users: int = MAX_USERS) -> None:
        self._recent_blocks, self._max_users = recent_blocks, max_users
        self._blocks: OrderedDict[int, deque[tuple[int, int]]] = OrderedDict()

    def record(self, user: int | None, drafted: int, accepted: int) -> None:
        """One verified block of ``user`` (sessions without a user are nobody's to allocate: not recorded)."""
        if user is None:
            return
        blocks = self._blocks.pop(user, None) or deque(maxlen=self._recent_blocks)
        blocks.append((drafted, accepted))
        self._blocks[user] = blocks
        while len(self._blocks) > self._max_users:
            self._blocks.popitem(last=False)

    def counts(self, user: int) -> DraftCounts:
        blocks = self._blocks.get(user, ())
        return DraftCounts(sum(d for d, _ in blocks), sum(a for _, a in blocks), sum(a < d for d, a in blocks))
