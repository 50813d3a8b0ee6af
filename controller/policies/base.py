"""The ``Policy`` seam: an observation of one slot in, a decision for the next slot out.

A policy is pure: no I/O, no clock, deterministic for its seed and the observation.  The controller (and the
digital twin) build observations from telemetry and apply decisions; policies only decide.  Every decision is
checked against the one share rule (``tandem.shares``) before anything applies it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from controller.estimator import EdgeState, UserState
from tandem.shares import check_shares


@dataclass(frozen=True)
class Observation:
    slot: int
    edges: tuple[EdgeState, ...]
    users: tuple[UserState, ...]  # se_up / se_down indexed by the position of each edge in ``edges``


@dataclass(frozen=True)
class Allocation:
    user: int
    edge: int
    bandwidth_share: float
    compute_share: float
    draft_length: int


@dataclass(frozen=True)
class Decision:
    slot: int
    allocations: tuple[Allocation, ...]

    def check(self, observation: Observation) -> None:
        """ValueError naming the first problem: a user missing or twice, an unknown edge, a share out of range or
        the shares of one edge summing over 1 (bandwidth or compute)."""
        users = [a.user for a in self.allocations]
        expected = sorted(u.user for u in observation.users)
        if sorted(users) != expected:
            raise ValueError(f"the decision covers users {sorted(users)}, the observation {expected}")
        edges = {e.edge for e in observation.edges}
        for resource in ("bandwidth_share", "compute_share"):
            check_shares(((a.user, a.edge, getattr(a, resource)) for a in self.allocations), edges,
                         f"in the topology ({resource.replace('_', ' ')})")
        for a in self.allocations:
            if a.draft_length < 1:
                raise ValueError(f"user {a.user}: draft length must be at least 1, got {a.draft_length}")


class Policy(ABC):
    """Decides association and shares.  Subclasses set ``name`` and take their parameters as keyword arguments."""

    name: ClassVar[str]

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def decide(self, observation: Observation) -> Decision: ...
