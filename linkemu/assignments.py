"""Who is associated with which edge, with what bandwidth share: the emulator's live view of UARA decisions.

Static config fills it at start; the controller will update it each slot. Readers (the shapers, new
connections) always see one consistent assignment per user.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Assignment:
    edge: int
    share: float


class AssignmentTable:
    def __init__(self, num_edges: int, initial: dict[int, Assignment]) -> None:
        self.num_edges = num_edges
        self._lock = threading.Lock()
        self._assignments: dict[int, Assignment] = {}
        for user, assignment in initial.items():
            self.assign(user, assignment)

    def assign(self, user: int, assignment: Assignment) -> None:
        if not 0 <= assignment.edge < self.num_edges:
            raise ValueError(f"edge {assignment.edge} out of range [0, {self.num_edges})")
        if not 0 < assignment.share <= 1:
            raise ValueError(f"share must be within (0, 1], got {assignment.share}")
        with self._lock:
            self._assignments[user] = assignment

    def get(self, user: int) -> Assignment:
        with self._lock:
            return self._assignments[user]

    def users(self) -> list[int]:
        with self._lock:
            return sorted(self._assignments)
