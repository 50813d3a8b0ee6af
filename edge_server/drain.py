"""Graceful shutdown of an edge (SIGTERM): take no new work, finish the blocks in flight, then stop.

While draining, opens, attaches, new blocks and Score calls are refused with UNAVAILABLE (a device resumes on
another edge: the controller sees ``draining`` in the edge's load and moves its users at once), blocks already
accepted get their verdicts, and the server stops once none is in flight or ``drain_s`` has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from edge_server.sessions import SessionError

log = logging.getLogger(__name__)


class Drain:
    def __init__(self) -> None:
        self.since: float | None = None
        self.in_flight = 0  # blocks and Score calls accepted and not yet answered

    @property
    def active(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        self.since = time.monotonic()

    def refuse_new_work(self) -> None:
        if self.active:
            raise SessionError("UNAVAILABLE", "the edge is shutting down; resume on another edge")

    async def wait(self, limit_s: float) -> float:
        """Until nothing is in flight or ``limit_s`` passed; returns the seconds the drain took."""
        deadline = self.since + limit_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return time.monotonic() - self.since

    async def finish(self, limit_s: float) -> None:
        """The edge's shutdown drain (after health reports NOT_SERVING, before its server stops): refuse new work,
        then wait up to ``limit_s`` for the work in flight."""
        log.info("draining (new work refused, blocks in flight finish)")
        self.begin()
        in_flight = self.in_flight
        took = await self.wait(limit_s)
        log.info("drained in %.3f s (%d requests were in flight, %d left unfinished)", took, in_flight, self.in_flight)

    def work(self) -> "InFlight":
        return InFlight(self)


class InFlight:
    """``async with drain.work():`` counts one accepted request until it is answered."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain

    async def __aenter__(self) -> None:
        self._drain.refuse_new_work()
        self._drain.in_flight += 1

    async def __aexit__(self, *exc) -> None:
        self._drain.in_flight -= 1
