"""Which edge a device uses now: one fixed edge, or whichever the controller associates it with.

The decoding loop asks its ``Route`` for the current edge before each round and after a broken link; when the
answer changes it moves the request there (decoding.py).  ``ControllerRoute`` watches the controller's allocation
stream (proto/tandem/wire/v1/control.proto) in a background thread and keeps the last allocation while the
controller is unreachable; it also reports the device's draft speed, acceptance and pending work.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import grpc

from device_client.edge_handle import RESUME_WITHIN_S, EdgeHandle
from device_client.grpc_edge import RECONNECT_BACKOFF_MS, EdgeConnection
from tandem.tls import Transport, default_transport
from tandem.wire.v1 import control_pb2 as cpb
from tandem.wire.v1 import control_pb2_grpc

log = logging.getLogger(__name__)
WATCH_RETRY_S = 0.5  # between attempts to reach an unreachable controller (the last allocation holds meanwhile)
REPORT_EVERY_S = 0.5  # at most one telemetry report per this long
REPORT_TIMEOUT_S = 0.5


class ControllerUnreachable(Exception):
    pass


class ControllerRefused(Exception):
    """The controller answered but will not route this user (not in its topology)."""


@dataclass(frozen=True)
class DeviceStats:
    """What the device measured of its running request (sent to the controller for its next decisions)."""

    draft_seconds_per_token: float
    acceptance: float
    pending_tokens: int
    round_seconds: float


class Route(ABC):
    may_change: bool = False  # False: a broken link is waited out on the same edge
    time_stretch: float = 1.0  # real seconds per emulated second (the dilation D under hardware pacing)
    resume_within_s: float = RESUME_WITHIN_S  # a request whose link stays broken this long ends with an error

    @abstractmethod
    def current(self) -> EdgeHandle: ...

    def draft_length(self, longest: int) -> int:
        """Tokens per block for the next round, at most ``longest`` (the session's limit)."""
        return longest

    def report(self, stats: DeviceStats) -> None:
        """Telemetry for whoever decides the route (ignored by a fixed route)."""

    def close(self) -> None: ...


class FixedRoute(Route):
    def __init__(self, edge: EdgeHandle, resume_within_s: float = RESUME_WITHIN_S) -> None:
        self._edge = edge
        self.resume_within_s = resume_within_s

    def current(self) -> EdgeHandle:
        return self._edge

    def close(self) -> None:
        self._edge.close()


@dataclass(frozen=True)
class _Allocation:
    version: int
    edge: int
    address: str
    draft_length: int


class ControllerRoute(Route):
    """Follows the controller's allocation of ``user``.  ``via``: the device's radio link (a link emulator's address
    for this user), through which every edge is reached; without it the device dials the edge's address."""

    may_change = True

    def __init__(self, controller: str, user: int, via: str | None = None, connect_timeout: float = 10.0,
                 dilation: float = 0.0, transport: Transport | None = None) -> None:
        self.user = user
        self._via = via
        self._transport = transport or default_transport(f"device-{user}")
        self._connect_timeout = connect_timeout
        # Under hardware pacing every duration the device measures is D times the emulated one: report the latter.
        self.time_stretch = dilation if dilation > 0 else 1.0
        self._channel = self._transport.channel(controller, "controller", options=[
            (f"grpc.{bound}_reconnect_backoff_ms", ms) for bound, ms in RECONNECT_BACKOFF_MS.items()])
        self._stub = control_pb2_grpc.ControllerStub(self._channel)
        self._allocation: _Allocation | None = None
        self._refused: str | None = None
        self._updated = threading.Condition()
        self._edges: dict[int, EdgeConnection] = {}
        self._edges_lock = threading.Lock()  # the decoding thread adds handles, close() may run on another
        self._closed = False
        self._call = None
        self._last_report = 0.0
        threading.Thread(target=self._watch, name=f"controller-watch-{user}", daemon=True).start()
        with self._updated:
            self._updated.wait_for(lambda: self._allocation is not None or self._refused is not None,
                                   timeout=connect_timeout)
        if self._refused is not None or self._allocation is None:
            self.close()
            if self._refused is not None:
                raise ControllerRefused(self._refused)
            raise ControllerUnreachable(f"no allocation from the controller at {controller} within "
                                        f"{connect_timeout:g} s; is `tandem controller serve` running?")

    @property
    def edge(self) -> int:
        return self._allocation.edge

    @property
    def version(self) -> int:
        return self._allocation.version

    def current(self) -> EdgeHandle:
        allocation = self._allocation
        with self._edges_lock:
            handle = self._edges.get(allocation.edge)
            if handle is None:
                # Checked by its own name: through the radio link (--via) the emulator decides which edge answers,
                # and only the edge the controller named is accepted.
                handle = self._edges[allocation.edge] = EdgeConnection(
                    self._via or allocation.address, self._connect_timeout,
                    name=f"edge {allocation.edge} ({allocation.address})", transport=self._transport,
                    edge_id=allocation.edge)
            return handle

    def draft_length(self, longest: int) -> int:
        return max(1, min(longest, self._allocation.draft_length or longest))

    def wait_for_version(self, version: int, timeout: float) -> bool:
        with self._updated:
            return self._updated.wait_for(lambda: self._allocation.version >= version, timeout=timeout)

    def report(self, stats: DeviceStats) -> None:
        now = time.monotonic()
        if now - self._last_report < REPORT_EVERY_S and stats.pending_tokens:
            return
        self._last_report = now
        try:
            self._stub.Report(cpb.UserReport(
                user=self.user, draft_seconds_per_token=stats.draft_seconds_per_token / self.time_stretch,
                acceptance=stats.acceptance, pending_tokens=stats.pending_tokens,
                round_seconds=stats.round_seconds / self.time_stretch), timeout=REPORT_TIMEOUT_S)
        except grpc.RpcError as error:  # telemetry is best-effort: the controller keeps the previous figures
            log.debug("report to the controller failed: %s", error.code())

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        with self._edges_lock:
            handles, self._edges = list(self._edges.values()), {}
        for handle in handles:
            handle.close()
        self._channel.close()

    def _watch(self) -> None:
        while not self._closed:
            try:
                self._call = self._stub.WatchAllocation(cpb.WatchAllocationRequest(user=self.user))
                for message in self._call:
                    with self._updated:
                        self._allocation = _Allocation(message.version, message.edge, message.edge_address,
                                                       message.draft_length)
                        self._updated.notify_all()
            except grpc.RpcError as error:
                if self._closed:
                    return
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                        grpc.StatusCode.CANCELLED):
                    refusal = f"the controller refused user {self.user}: {error.code().name}: {error.details()}"
                    if self._allocation is None:  # nothing to keep: the device cannot start
                        with self._updated:
                            self._refused = refusal
                            self._updated.notify_all()
                        return
                    log.warning("%s; keeping the last allocation", refusal)
            time.sleep(WATCH_RETRY_S)  # controller unreachable, restarting or refusing: keep the last allocation
