"""What the controller believes of a user: device reports bounded by what is physically possible.

A device reports its draft speed, acceptance and pending work (``Controller.Report``), and the policies allocate
by them: a device that claimed 2³²−1 pending tokens, acceptance 0 and drafting in 0 s once got 0.997 of an edge.
So no figure a device sends is taken beyond what the system itself observes or the deployment allows:

* **pending tokens** ≤ what the edges report the user's open sessions may still commit (each session's declared
  budget left, bounded by the context left: ``UserLoad.remaining_tokens``); a user with no open session on any
  edge (a request about to start) may claim at most ``assume.pending_tokens``;
* **acceptance**: the edges verify every block, so once they have seen ``MIN_OBSERVED_DRAFTS`` of the user's
  drafted tokens their count (accepted / drafted, the device's own definition) replaces the report; before that,
  the report is held to ``[assume.min_acceptance, 1]``; either is turned into the model's per-token α for the
  user's block length;
* **draft speed** within ``[assume.min_draft_seconds_per_token, 10 s]``: no device drafts faster than the fastest
  device class the deployment has (its hardware profile).

What is left to a report then moves only the user's own share, and only within the floor that
``controller/share_floor.py`` guarantees every other member of the edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.config import Assumptions
from controller.estimator import acceptance_from_rate

MIN_OBSERVED_DRAFTS = 16  # drafted tokens an edge must have verified before its acceptance replaces the report
MAX_DRAFT_SECONDS_PER_TOKEN = 10.0


@dataclass(frozen=True)
class DeviceReport:
    draft_seconds_per_token: float
    acceptance: float
    pending_tokens: int
    round_seconds: float = 0.0  # observed mean round (0 = none yet)


@dataclass(frozen=True)
class ObservedUser:
    """What one edge observed of a user (``UserLoad``)."""

    remaining_tokens: int  # its open sessions there may still commit this many
    sessions: int
    drafted_tokens: int  # recent verified blocks
    accepted_tokens: int
    rejected_blocks: int = 0  # of those blocks, the ones a rejected token cut short


@dataclass(frozen=True)
class Believed:
    """The figures a policy gets for a user."""

    draft_seconds_per_token: float
    acceptance: float
    pending_tokens: int


def believe(report: DeviceReport | None, observed: Iterable[ObservedUser], assume: Assumptions,
            draft_length: int = 1) -> Believed:
    """A user's report (None: none yet) bounded by the edges' observations of it and the assumptions.

    The belief is the per-token acceptance α the latency model uses, as ``assume.acceptance`` is: from the edges'
    counts, accepted / (accepted + blocks cut short); from a device's report (accepted / drafted of its
    ``draft_length``-token blocks), converted (``estimator.acceptance_from_rate``)."""
    observed = list(observed)
    drafted = sum(o.drafted_tokens for o in observed)
    accepted = sum(o.accepted_tokens for o in observed)
    rejected = sum(o.rejected_blocks for o in observed)
    if drafted >= MIN_OBSERVED_DRAFTS and (rejected or accepted == drafted):
        # Each accepted token is a success, each block cut short one failure: α whatever the blocks' lengths were
        # (read at one length, counts of blocks of several — the lever changing k — made it swing the lever).
        acceptance = accepted / (accepted + rejected)
    elif drafted >= MIN_OBSERVED_DRAFTS:  # an edge that does not count cut-short blocks
        acceptance = acceptance_from_rate(accepted / drafted, draft_length)
    elif report:
        acceptance = min(1.0, max(assume.min_acceptance, acceptance_from_rate(report.acceptance, draft_length)))
    else:
        acceptance = assume.acceptance
    if any(o.sessions for o in observed):
        budget = sum(o.remaining_tokens for o in observed)
    else:
        budget = assume.pending_tokens
    pending = min(budget, report.pending_tokens if report else assume.pending_tokens)
    draft = report.draft_seconds_per_token if report and report.draft_seconds_per_token > 0 \
        else assume.draft_seconds_per_token
    draft = min(MAX_DRAFT_SECONDS_PER_TOKEN, max(assume.min_draft_seconds_per_token, draft))
    return Believed(draft, acceptance, pending)
