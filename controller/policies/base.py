"""The ``Policy`` seam: an observation of one slot in, a decision for the next slot out.

A policy is pure: no I/O, no clock, deterministic for its seed and the observation.  The controller (and the
digital twin) build observations from telemetry and apply decisions; policies only decide.  Every decision is
checked against the one share rule (``tandem.shares``) before anything applies it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from controller.estimator import EdgeState, UserState, latency_seconds, pair_costs, round_seconds
from tandem.shares import check_shares


@dataclass(frozen=True)
class Observation:
    slot: int
    edges: tuple[EdgeState, ...]
    users: tuple[UserState, ...]  # se_up / se_down indexed by the position of each edge in ``edges``

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("an observation needs at least one edge")
        if len({e.edge for e in self.edges}) != len(self.edges) or len({u.user for u in self.users}) != len(self.users):
            raise ValueError("edge and user ids must be unique")
        for user in self.users:
            if len(user.se_up) != len(self.edges) or len(user.se_down) != len(self.edges):
                raise ValueError(f"user {user.user}: one spectral efficiency per edge is needed in each direction "
                                 f"({len(self.edges)} edges, got {len(user.se_up)} up and {len(user.se_down)} down)")


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

    def estimated_latency(self, observation: Observation, parallel: bool = True) -> np.ndarray:
        """Each user's estimated remaining latency under this decision (in ``observation.users`` order)."""
        return latency_seconds(*self._estimator_inputs(observation), parallel)

    def estimated_round_seconds(self, observation: Observation, parallel: bool = True) -> np.ndarray:
        """Each user's estimated round time under this decision (in ``observation.users`` order)."""
        return round_seconds(*self._estimator_inputs(observation), parallel)

    def _estimator_inputs(self, observation: Observation) -> tuple:
        position = {e.edge: i for i, e in enumerate(observation.edges)}
        by_user = {a.user: a for a in self.allocations}
        chosen = [by_user[u.user] for u in observation.users]
        return (pair_costs(list(observation.users), list(observation.edges)), np.arange(len(chosen)),
                np.array([position[a.edge] for a in chosen], dtype=int),
                np.array([a.bandwidth_share for a in chosen]), np.array([a.compute_share for a in chosen]))


class Policy(ABC):
    """Decides association and shares.  Subclasses set ``name`` and take their parameters as keyword arguments."""

    name: ClassVar[str]
    # What the caller knows that this policy takes as keyword arguments (make_policy passes them, and nothing else
    # it knows): ``policy_dir`` (where a ``checkpoint`` name is looked up), ``actor`` (a network loaded once),
    # ``parallel`` (whether devices draft while the edge verifies: the twin's mode), ``twin`` (the digital twin).
    from_caller: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def decide(self, observation: Observation) -> Decision: ...

    def check_scenario(self, scenario) -> None:
        """ValueError, with the reason, when this policy cannot play a twin scenario (controller/twin/scenario.py)
        at all: said before the first slot rather than in the middle of a run.  Any policy can by default."""
