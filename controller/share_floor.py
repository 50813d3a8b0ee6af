"""A floor under every user's shares: what one user's reports can take from the others is bounded.

Policies allocate by what users report, and a report is believed only within physical bounds (controller/trust.py)
— which still leaves a device room to exaggerate within them.  So whatever a policy decides, the controller
raises every member of an edge to at least ``floor / n`` of that edge's bandwidth and of its compute (n: the
edge's members in the decision), taking the difference from the members above it in proportion to their excess.
Shares of one edge still sum to at most 1.

The bound, for an edge of n members: an honest user keeps at least ``floor / n`` of each resource, and a user
whose reports are as favourable to it as they can be gets at most ``1 − (n − 1) · floor / n``; at the default
floor of 0.5 with 4 members, a user is held within [0.125, 0.625] of the edge, against 0.25 for an equal split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from controller.policies.base import Allocation, Decision

RESOURCES = ("bandwidth_share", "compute_share")
DEFAULT_SHARE_FLOOR = 0.5  # half an equal share: the controller's and the twin's default


def floored(shares: list[float], floor: float) -> list[float]:
    """The shares of one edge's members with each raised to ``floor / n``, the excess of the others scaled down
    to pay for it (their sum then stays at most 1)."""
    if not shares or floor <= 0:
        return list(shares)
    least = floor / len(shares)
    deficit = sum(max(0.0, least - share) for share in shares)
    excess = sum(max(0.0, share - least) for share in shares)
    # Raising every share to the floor adds `deficit`; what the total then exceeds 1 by comes out of the excess
    # (never more than the excess: the floors alone sum to `floor` <= 1).
    over = max(0.0, sum(shares) + deficit - 1.0)
    keep = 1.0 - over / excess if excess > 0 else 1.0
    return [least + (share - least) * keep if share > least else least for share in shares]


def with_share_floor(decision: Decision, floor: float) -> Decision:
    """The decision with every member's bandwidth and compute share on its edge at least ``floor / members``."""
    members: dict[int, list[int]] = defaultdict(list)
    for index, allocation in enumerate(decision.allocations):
        members[allocation.edge].append(index)
    allocations: list[Allocation] = list(decision.allocations)
    for indices in members.values():
        for resource in RESOURCES:
            raised = floored([getattr(allocations[i], resource) for i in indices], floor)
            for i, share in zip(indices, raised):
                allocations[i] = replace(allocations[i], **{resource: share})
    return Decision(decision.slot, tuple(allocations))
