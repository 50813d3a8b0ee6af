"""The trace-driven link emulator: one shaping proxy per user, rates from a channel trace and the assignments.

rate(t) = share of user u x bandwidth of its edge e x spectral efficiency of (u, e) in the slot playing at t,
separately up and down; plus a base one-way delay. Every slot it refreshes the gauges, including the per-pair
SINR that makes up the measurement report the controller reads through the control service (control.py).  When the
controller changes a user's share or edge, what waits in that user's link is re-timed at the new rate at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic import ValidationError

from linkemu.assignments import Assignment, AssignmentTable
from linkemu.config import LinkEmuConfig, split_address
from linkemu.metrics import LinkEmuMetrics
from linkemu.proxy import ShapingProxy
from linkemu.shaper import Direction, SlotClock, TraceShaper
from tandem.config_files import validation_reasons
from tandem.trace_format import ChannelTrace
from tandem.wire.v1 import linkemu_pb2 as pb

log = logging.getLogger(__name__)


class LinkEmulator:
    def __init__(self, config: LinkEmuConfig, trace: ChannelTrace) -> None:
        meta = trace.metadata
        config.check_against(meta.num_users, meta.num_edges, meta.num_slots)
        self.config, self.trace = config, trace
        self.addresses = {edge.index: split_address(edge.address) for edge in config.edges}
        self.assignments = AssignmentTable(
            self.addresses, {link.user: Assignment(link.edge, link.share) for link in config.users})
        self.clock = SlotClock(time.monotonic(), trace.slot_s, meta.num_slots, self._speedup, config.loop)
        self.clock.play_from(config.start_slot, self.clock.origin)
        self.metrics = LinkEmuMetrics()
        self.shapers = {link.user: self._shaper(link.user) for link in config.users}
        self.proxies = {
            link.user: ShapingProxy(*split_address(link.listen), self._upstream(link.user), self.shapers[link.user],
                                    self.metrics.observer(link.user), config.max_connections)
            for link in config.users
        }
        self.assignments.subscribe(self._reassigned)
        self._ticker: asyncio.Task | None = None
        # The newest measurement report and its number, for the control service's watchers.
        self._published = asyncio.Condition()
        self._report: pb.MeasurementReport | None = None
        self._report_number = 0

    @classmethod
    def single_link(cls, trace: ChannelTrace, trace_path: Path, upstream: str, user: int, edge: int, share: float,
                    base_delay_ms: float = 5.0, speedup: float = 1.0,
                    outage_limit_s: float = 10.0, dilation: float = 0.0) -> "LinkEmulator":
        """One user's link to one edge on a free local port (for in-process use by the benches).
        ValueError (pydantic's, or an index outside the trace) when a setting is invalid."""
        try:
            config = LinkEmuConfig(trace=trace_path, edges=[{"index": edge, "address": upstream}],
                                   users=[{"user": user, "edge": edge, "share": share}],
                                   base_delay_ms=base_delay_ms, speedup=speedup, outage_limit_s=outage_limit_s,
                                   dilation=dilation)
        except ValidationError as error:
            raise ValueError(f"invalid link: {validation_reasons(error)}") from None
        return cls(config, trace)

    @property
    def _speedup(self) -> float:
        """Trace slots per real slot length: the configured speedup, slowed down D times under time dilation."""
        return self.config.speedup / self.config.time_stretch

    def _shaper(self, user: int) -> TraceShaper:
        stretch = self.config.time_stretch  # under time dilation D: D times less rate, D times more delay

        def rate_of(direction: Direction, slot: int) -> float:
            assignment = self.assignments.get(user)
            return float(self.trace.rate_bps(direction.value, user, assignment.edge, assignment.share, slot)) / stretch

        return TraceShaper(self.clock, rate_of, stretch * self.config.base_delay_ms / 1000,
                           stretch * self.config.outage_limit_s)

    def _upstream(self, user: int):
        return lambda: self.addresses[self.assignments.get(user).edge]

    def _reassigned(self, users: frozenset[int]) -> None:
        """These users' share or edge changed: the bytes waiting in their links go again at the new rate (their
        open connections stay with the edge they were opened to; new ones go to the new edge)."""
        for user in users:
            self.proxies[user].reschedule()

    def measurements(self, now: float) -> pb.MeasurementReport:
        """Per-pair SINR of the slot playing at ``now``: what the devices would measure and report."""
        slot = self.clock.slot(self.clock.tick(now))
        down, up = self.trace.sinr_db[0, slot], self.trace.sinr_db[1, slot]
        se_down, se_up = self.trace.se[0, slot], self.trace.se[1, slot]
        return pb.MeasurementReport(slot=slot, slot_s=self.trace.slot_s, pairs=[
            pb.PairMeasurement(user=user, edge=edge, sinr_down_db=down[user, edge], sinr_up_db=up[user, edge],
                               se_down=se_down[user, edge], se_up=se_up[user, edge])
            for user in self.assignments.snapshot() for edge in range(self.trace.metadata.num_edges)])

    def refresh_gauges(self, report: pb.MeasurementReport, now: float) -> None:
        self.metrics.slot.set(report.slot)
        for pair in report.pairs:
            self.metrics.sinr.labels(str(pair.user), str(pair.edge), "down").set(pair.sinr_down_db)
            self.metrics.sinr.labels(str(pair.user), str(pair.edge), "up").set(pair.sinr_up_db)
        self.metrics.share.clear()  # a user moved to another edge leaves no stale series behind
        for user, shaper in self.shapers.items():
            assignment = self.assignments.get(user)
            self.metrics.share.labels(str(user), str(assignment.edge)).set(assignment.share)
            for direction in Direction:
                self.metrics.rate.labels(str(user), direction.value).set(shaper.rate_bps(direction, now))

    async def start(self) -> dict[int, str]:
        """Start every proxy; returns each user's listening address."""
        # The trace plays from the moment the links come up, however long the start-up took (a slow machine must
        # not skip the trace's first slots).
        self.clock.play_from(self.config.start_slot, time.monotonic())
        for proxy in self.proxies.values():
            await proxy.start()
        self._ticker = asyncio.create_task(self._tick())
        return {user: f"{proxy.listen_host}:{proxy.listen_port}" for user, proxy in self.proxies.items()}

    async def seek(self, slot: int) -> pb.MeasurementReport:
        """Play the trace from ``slot`` on, starting now; bytes waiting in the links go again at the rates of that
        slot, and watchers get its report at once.  ValueError when the slot is past the trace's end."""
        if not 0 <= slot < self.trace.metadata.num_slots:
            raise ValueError(f"slot {slot} is past the trace's end ({self.trace.metadata.num_slots} slots)")
        now = time.monotonic()
        self.clock.play_from(slot, now)
        for proxy in self.proxies.values():
            proxy.reschedule()
        report = self.measurements(now)
        await self._publish(report, now)
        log.info("trace seek: slot %d plays now", slot)
        return report

    async def _publish(self, report: pb.MeasurementReport, now: float) -> None:
        self.refresh_gauges(report, now)
        async with self._published:
            self._report, self._report_number = report, self._report_number + 1
            self._published.notify_all()

    async def reports(self) -> AsyncIterator[pb.MeasurementReport]:
        """The current measurement report, then each new one as its slot starts; a slow reader skips to the
        newest rather than falling behind."""
        seen = None
        while True:
            async with self._published:
                await self._published.wait_for(lambda: self._report is not None and self._report_number != seen)
                seen, report = self._report_number, self._report
            yield report

    async def _tick(self) -> None:
        while True:
            now = time.monotonic()
            await self._publish(self.measurements(now), now)
            await asyncio.sleep(max(0.001, self.clock.tick_end(self.clock.tick(now)) - now))

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
        for proxy in self.proxies.values():
            await proxy.stop()
