"""A floor under every busy user's shares: what one user's reports can take from the others is bounded.

Policies allocate by what users report, and a report is believed only within physical bounds (controller/trust.py)
— which still leaves a device room to exaggerate within them.  So whatever a policy decides, the controller
raises every **busy** member of an edge — one the edges observe with an open session, which a device cannot fake
by reporting — to at least ``floor / n`` of that edge's bandwidth and of its compute (n: the edge's busy members),
taking the difference from the members above their minimum in proportion to their excess.  Idle members keep what
the policy gave them (at least the share rule's ``MIN_SHARE``): the link emulator's bandwidth is not work-conserving,
so a floor for idle users would waste what busy ones could use.  Shares of one edge still sum to at most 1.

The bound, for an edge with n busy members: an honest busy user keeps at least ``floor / n`` of each resource, and a
user whose reports are as favourable to it as they can be gets at most ``1 − (n − 1) · floor / n``; at the default
floor of 0.5 with 4 busy members, a user is held within [0.125, 0.625] of the edge, against 0.25 for an equal split.
The floor does not bound association: a user's reports can still win it an edge of its own, where the others'
floor is then shared among fewer (or more) members.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import replace

from controller.policies.base import Allocation, Decision
from tandem.shares import MIN_SHARE, floored

RESOURCES = ("bandwidth_share", "compute_share")
DEFAULT_SHARE_FLOOR = 0.5  # half an equal share: the controller's and the twin's default


def with_share_floor(decision: Decision, floor: float, busy: Collection[int]) -> Decision:
    """The decision with every busy member's bandwidth and compute share on its edge at least
    ``floor / busy members``."""
    members: dict[int, list[int]] = defaultdict(list)
    for index, allocation in enumerate(decision.allocations):
        members[allocation.edge].append(index)
    allocations: list[Allocation] = list(decision.allocations)
    for indices in members.values():
        protected = [allocations[i].user in busy for i in indices]
        if floor <= 0 or not any(protected):
            continue
        least = min(floor, 1.0 - MIN_SHARE * protected.count(False)) / sum(protected)  # all minimums fit in 1
        minimums = [least if is_busy else MIN_SHARE for is_busy in protected]
        for resource in RESOURCES:
            raised = floored([getattr(allocations[i], resource) for i in indices], minimums)
            for i, share in zip(indices, raised):
                allocations[i] = replace(allocations[i], **{resource: share})
    return Decision(decision.slot, tuple(allocations))
