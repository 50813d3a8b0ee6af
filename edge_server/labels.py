"""Prometheus label values for users, bounded in number.

Why: every label value is a time series the registry keeps for the life of the process, and an edge learns user
numbers from requests (any 32-bit number a plaintext client, the controller or an admin names).  Labelled without a
bound, a client could grow an edge's memory and every scrape without end.  ``UserLabels`` gives the first
``MAX_USER_LABELS`` distinct users a label of their own and every later one the shared label ``other``.

The link emulator and the controller label users from their own topology (a config file the operator wrote), which
bounds them already.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

__all__ = ["MAX_USER_LABELS", "NO_USER", "OTHER_USERS", "UserLabels"]

MAX_USER_LABELS = 256  # more than a deployment's users at one edge; few enough for any Prometheus
OTHER_USERS = "other"
NO_USER = "none"  # work that no user paid for (a session opened without a user number)


class UserLabels:
    """The label of each user number: its decimal number for the first ``limit`` users seen, then ``other``."""

    def __init__(self, limit: int = MAX_USER_LABELS) -> None:
        if limit < 0:
            raise ValueError(f"a label limit is not negative, not {limit}")
        self.limit = limit
        self._labelled: set[int] = set()
        self._lock = threading.Lock()  # the metrics of one process are updated from several threads

    def __call__(self, user: int | None) -> str:
        if user is None:
            return NO_USER
        with self._lock:
            if user not in self._labelled:
                if len(self._labelled) >= self.limit:
                    return OTHER_USERS
                self._labelled.add(user)
        return str(user)

    def totals(self, by_user: Mapping[int, float]) -> dict[str, float]:
        """Per-user values (a gauge's) summed per label: the users beyond the limit share ``other``'s total."""
        summed: dict[str, float] = {}
        for user, value in by_user.items():
            label = self(user)
            summed[label] = summed.get(label, 0.0) + value
        return summed
