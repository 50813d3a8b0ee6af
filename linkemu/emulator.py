"""The trace-driven link emulator: one shaping proxy per user, rates from a channel trace and the assignments.

rate(t) = share of user u x bandwidth of its edge e x spectral efficiency of (u, e) in the slot playing at t,
separately up and down; plus a base one-way delay. Every slot it refreshes the gauges, including the per-pair
SINR that makes up the measurement report the controller will consume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from linkemu.assignments import Assignment, AssignmentTable
from linkemu.config import LinkEmuConfig, split_address
from linkemu.metrics import LinkEmuMetrics
from linkemu.proxy import ShapingProxy
from linkemu.shaper import Direction, SlotClock, TraceShaper
from tandem.cli_support import validation_reasons
from tandem.traces.format import ChannelTrace

log = logging.getLogger(__name__)


class PairMeasurement(BaseModel):
    user: int
    edge: int
    sinr_db_down: float
    sinr_db_up: float


class MeasurementReport(BaseModel):
    """Per-pair SINR of the slot playing now: what a device would measure and report to the controller."""

    slot: int
    time_s: float
    pairs: list[PairMeasurement]


class LinkEmulator:
    def __init__(self, config: LinkEmuConfig, trace: ChannelTrace) -> None:
        meta = trace.metadata
        config.check_against(meta.num_users, meta.num_edges, meta.num_slots)
        self.config, self.trace = config, trace
        self.addresses = {edge.index: split_address(edge.address) for edge in config.edges}
        self.assignments = AssignmentTable(
            meta.num_edges, {link.user: Assignment(link.edge, link.share) for link in config.users})
        # Slot `start_slot` plays from now on.
        origin = time.monotonic() - config.start_slot * trace.slot_s / config.speedup
        self.clock = SlotClock(origin, trace.slot_s, meta.num_slots, config.speedup, config.loop)
        self.metrics = LinkEmuMetrics()
        self.shapers = {link.user: self._shaper(link.user) for link in config.users}
        self.proxies = {
            link.user: ShapingProxy(*split_address(link.listen), self._upstream(link.user), self.shapers[link.user],
                                    self.metrics.observer(link.user))
            for link in config.users
        }
        self._ticker: asyncio.Task | None = None

    @classmethod
    def single_link(cls, trace: ChannelTrace, trace_path: Path, upstream: str, user: int, edge: int, share: float,
                    base_delay_ms: float = 5.0, speedup: float = 1.0,
                    outage_limit_s: float = 10.0) -> "LinkEmulator":
        """One user's link to one edge on a free local port (for in-process use: `tandem generate`, benches).
        ValueError (pydantic's, or an index outside the trace) when a setting is invalid."""
        try:
            config = LinkEmuConfig(trace=trace_path, edges=[{"index": edge, "address": upstream}],
                                   users=[{"user": user, "edge": edge, "share": share}],
                                   base_delay_ms=base_delay_ms, speedup=speedup, outage_limit_s=outage_limit_s)
        except ValidationError as error:
            raise ValueError(f"invalid link: {validation_reasons(error)}") from None
        return cls(config, trace)

    def _shaper(self, user: int) -> TraceShaper:
        def rate_of(direction: Direction, slot: int) -> float:
            assignment = self.assignments.get(user)
            return float(self.trace.rate_bps(direction.value, user, assignment.edge, assignment.share, slot))

        return TraceShaper(self.clock, rate_of, self.config.base_delay_ms / 1000, self.config.outage_limit_s)

    def _upstream(self, user: int):
        return lambda: self.addresses[self.assignments.get(user).edge]

    def measurements(self, now: float) -> MeasurementReport:
        slot = self.clock.slot(self.clock.tick(now))
        down, up = self.trace.sinr_db[0, slot], self.trace.sinr_db[1, slot]
        return MeasurementReport(slot=slot, time_s=now, pairs=[
            PairMeasurement(user=user, edge=edge, sinr_db_down=float(down[user, edge]), sinr_db_up=float(up[user, edge]))
            for user in self.assignments.users() for edge in range(self.trace.metadata.num_edges)])

    def refresh_gauges(self, now: float) -> None:
        report = self.measurements(now)
        self.metrics.slot.set(report.slot)
        for pair in report.pairs:
            self.metrics.sinr.labels(str(pair.user), str(pair.edge), "down").set(pair.sinr_db_down)
            self.metrics.sinr.labels(str(pair.user), str(pair.edge), "up").set(pair.sinr_db_up)
        for user, shaper in self.shapers.items():
            assignment = self.assignments.get(user)
            self.metrics.share.labels(str(user), str(assignment.edge)).set(assignment.share)
            for direction in Direction:
                self.metrics.rate.labels(str(user), direction.value).set(shaper.rate_bps(direction, now))

    async def start(self) -> dict[int, str]:
        """Start every proxy; returns each user's listening address."""
        for proxy in self.proxies.values():
            await proxy.start()
        self._ticker = asyncio.create_task(self._tick())
        return {user: f"{proxy.listen_host}:{proxy.listen_port}" for user, proxy in self.proxies.items()}

    async def _tick(self) -> None:
        while True:
            now = time.monotonic()
            self.refresh_gauges(now)
            await asyncio.sleep(max(0.001, self.clock.tick_end(self.clock.tick(now)) - now))

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
        for proxy in self.proxies.values():
            await proxy.stop()
