"""Who is associated with which edge, with what bandwidth share: the emulator's live view of UARA decisions.

The static config fills it at start; the controller changes it at run time through the control service
(linkemu/control.py). A change is checked as a whole and applied all at once, so readers (the shapers, new
connections) always see one consistent table in which the shares on each edge sum to at most 1.  Listeners hear
which users a change moved or re-shared (the emulator re-times the bytes waiting in their links).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tandem.shares import check_shares


@dataclass(frozen=True)
class Assignment:
    edge: int
    share: float


class AssignmentTable:
    def __init__(self, edges: Iterable[int], initial: Mapping[int, Assignment]) -> None:
        """``edges``: the edges users may be associated with (those whose address the emulator knows)."""
        self.edges = frozenset(edges)
        self._lock = threading.Lock()
        self._assignments = self._checked(dict(initial))
        self._listeners: list[Callable[[frozenset[int]], None]] = []

    def subscribe(self, listener: Callable[[frozenset[int]], None]) -> None:
        """After each change, ``listener(users)`` is called (in the caller's thread) with the users whose edge or
        share it changed."""
        self._listeners.append(listener)

    def assign(self, changes: Mapping[int, Assignment]) -> dict[int, Assignment]:
        """Apply every change or, raising ValueError with the first problem, none; returns the new table."""
        with self._lock:
            if unknown := sorted(set(changes) - set(self._assignments)):
                raise ValueError(f"user {unknown[0]} is not carried by this emulator "
                                 f"(users: {', '.join(map(str, sorted(self._assignments)))})")
            before = self._assignments
            self._assignments = self._checked({**before, **changes})
            table = dict(self._assignments)
        if changed := frozenset(user for user, assignment in changes.items() if before[user] != assignment):
            for listener in self._listeners:
                listener(changed)
        return table

    def get(self, user: int) -> Assignment:
        with self._lock:
            return self._assignments[user]

    def snapshot(self) -> dict[int, Assignment]:
        with self._lock:
            return dict(sorted(self._assignments.items()))

    def _checked(self, table: dict[int, Assignment]) -> dict[int, Assignment]:
        check_shares(((user, a.edge, a.share) for user, a in table.items()), self.edges, "this emulator can reach")
        return table
