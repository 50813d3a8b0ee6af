"""Where a speculative request's time went, and how far it is from what the hardware and the link allow.

Each round is timed on the device: drafting before the block was sent (nothing in flight), the block in flight
(sent until its verdict reached the device), of which the edge reports its own part (queue, then the target's
forward pass), and the time the verdict waited for the device (a draft step was finishing).  The link's share is
the time in flight minus the edge's: uplink and downlink together, since one-way times need clocks the device and
the edge do not share.

The bound: a round of k drafts cannot take less than max(k t_draft, link + verify), drafting fully hidden behind
the round trip or the round trip behind drafting (queueing is load, not hardware); with the accepted lengths
observed, the request's bound on time per token is the sum of its rounds' bounds over its tokens, and efficiency is
that bound over the time measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

PARTS = ("draft", "link", "queue", "verify", "late", "other")


@dataclass(frozen=True)
class RoundTiming:
    block: int  # drafts sent
    accepted: int
    draft_s: float  # drafting while nothing was in flight, before this block was sent
    in_flight_s: float  # sent -> verdict received by the device
    edge_s: float  # the edge's report: block arrival -> verdict (queue included)
    queue_s: float  # of which waiting for the engine
    late_s: float  # verdict received -> taken by the decoding loop

    @property
    def link_s(self) -> float:
        return max(0.0, self.in_flight_s - self.edge_s)

    @property
    def verify_s(self) -> float:
        return max(0.0, self.edge_s - self.queue_s)

    def bound_s(self, draft_token_s: float) -> float:
        return max(self.block * draft_token_s, self.link_s + self.verify_s)


def breakdown(rounds: Sequence[RoundTiming], elapsed_s: float) -> dict[str, float]:
    """The request's time by part (seconds, summing to ``elapsed_s``); ``other`` is opening and closing the
    session, prefill and the device's own bookkeeping."""
    parts = {"draft": sum(r.draft_s for r in rounds), "link": sum(r.link_s for r in rounds),
             "queue": sum(r.queue_s for r in rounds), "verify": sum(r.verify_s for r in rounds),
             "late": sum(r.late_s for r in rounds)}
    parts["other"] = max(0.0, elapsed_s - sum(parts.values()))
    return parts


def draft_token_seconds(seconds: Sequence[float]) -> float | None:
    """The draft's time per token: the median step (a prompt's prefill is one long step, not the rule)."""
    return statistics.median(seconds) if seconds else None


def bound_seconds(rounds: Sequence[RoundTiming], draft_token_s: float) -> float:
    return sum(r.bound_s(draft_token_s) for r in rounds)
