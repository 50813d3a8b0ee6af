"""The latest decision as devices see it: each user's allocation, and a watch that yields it when it changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from controller.policies.base import Allocation
from controller.state import VersionedDecision


@dataclass(frozen=True)
class UserAllocation:
    version: int
    slot: int
    allocation: Allocation


class AllocationBoard:
    def __init__(self) -> None:
        self._latest: VersionedDecision | None = None
        self._published = asyncio.Condition()

    @property
    def latest(self) -> VersionedDecision | None:
        return self._latest

    async def publish(self, decision: VersionedDecision) -> None:
        async with self._published:
            self._latest = decision
            self._published.notify_all()

    def allocation(self, user: int) -> UserAllocation | None:
        latest = self._latest
        if latest is None:
            return None
        found = next((a for a in latest.decision.allocations if a.user == user), None)
        return None if found is None else UserAllocation(latest.version, latest.decision.slot, found)

    async def watch(self, user: int) -> AsyncIterator[UserAllocation]:
        """The user's allocation in the latest decision, then in each new one (a slow reader skips to the newest).
        Every version is sent, changed or not, so that a device always knows which decision it follows."""
        seen_version = -1
        while True:
            async with self._published:
                await self._published.wait_for(
                    lambda: self._latest is not None and self._latest.version != seen_version)
                seen_version = self._latest.version
            current = self.allocation(user)
            if current is not None:
                yield current
