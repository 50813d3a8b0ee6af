"""Where a speculative request's time went, and how far it is from what the hardware and the link allow.

Each round is timed on the device: drafting before the block was sent (nothing in flight), the block in flight
(sent until its verdict reached the device), of which the edge reports its own part (queue, then the target's
forward pass), and the time the verdict waited for the device (a draft step was finishing).  The link's share is
the time in flight minus the edge's: uplink and downlink together, since one-way times need clocks the device and
the edge do not share.

The bound: the first block takes its k t_draft to draft; from then on, the next block is sent no sooner than both
the verdict of the one in flight (its link + verify; queueing is load, not hardware) and the drafting of its own
k tokens (begun, at the earliest, as the block in flight left): max(link + verify, k_next t_draft) per round, the
round trip fully hidden behind drafting or drafting behind the round trip.  With the block lengths and accepted
lengths observed, the request's bound on time per token is that sum over its tokens, and efficiency is the bound
over the time measured.
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
    """k_1 t_draft + the sum over rounds of max(link + verify, k_next t_draft) (k_next = 0 after the last)."""
    if not rounds:
        return 0.0
    following = [r.block for r in rounds[1:]] + [0]
    return rounds[0].block * draft_token_s + sum(max(r.link_s + r.verify_s, k * draft_token_s)
                                                 for r, k in zip(rounds, following))
