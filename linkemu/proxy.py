"""A user-space TCP proxy that carries a device's traffic to its edge through a ``LinkShaper``.

Works for any TCP protocol (gRPC/HTTP2 here) and needs no kernel support (netem is not available everywhere):
each chunk read from one side is written to the other at the time the shaper says it arrives, in order.  When
the shaper declares the link down (an outage longer than its limit), both sides are disconnected at that moment.

The port is open to anyone who reaches it (it carries TLS bytes without reading them), so what one port can hold is
bounded: at most ``max_connections`` at once, each buffering at most ``MAX_QUEUED_CHUNKS`` chunks per direction.
A connection past the cap is closed at once — unless one already there has carried nothing for ``IDLE_EVICT_S``:
that one is closed instead, so connections that merely sit on the port cannot lock its device out.

When the link's rate changes by decision (``reschedule``: a new share, another edge) the chunks still in the
emulated bottleneck are re-timed from that moment at the new rate, across the port's connections in the order they
were sent.  Connections stay with the edge they were opened to (an association change reaches new connections
only; the device moves its session itself), but their waiting bytes are carried at the new link's rate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from linkemu.shaper import Direction, LinkDown, LinkShaper, Transfer
from tandem.addresses import split_address
from tandem.rpc import QuietLog

log = logging.getLogger(__name__)
CHUNK_BYTES = 16 * 1024
# 1 MiB per direction and connection: several bandwidth-delay products of the fastest link emulated (320 Mbit/s x
# 5 ms is 200 kB; time dilation divides rates and multiplies delays alike), so the bound never shapes a transfer.
MAX_QUEUED_CHUNKS = 64
# Concurrent connections per user port: a device holds one per edge it talks to, briefly two while it reconnects.
MAX_CONNECTIONS = 8
# A full port makes room by closing its longest-idle connection when nothing crossed it for this long: the port is
# not authenticated, so connections that only sit there must not lock the device out (a device whose idle
# connection was closed dials again; its sessions resume). Longer than a gRPC keepalive's 20 s: a live device's
# connection is never idle that long.
IDLE_EVICT_S = 30.0


class LinkObserver:
    """What a proxy reports about its link (the metrics implement it); the default ignores everything."""

    def delivered(self, direction: Direction, nbytes: int, shaping_delay_s: float) -> None:
        """``nbytes`` arrived; they spent ``shaping_delay_s`` queued and serialised (beyond the base delay)."""

    def link_down(self) -> None:
        """A connection was broken by an outage longer than the limit."""

    def connection_refused(self) -> None:
        """A connection was closed at once: the port already carried its maximum."""


@dataclass(eq=False)
class _Chunk:
    """Bytes read from one side, waiting to be written to the other at their transfer's arrival."""

    data: bytes  # b"": the sender closed its side (passed on after everything before it)
    sent: float
    order: int  # the order of sending on the port, across its connections: rescheduling keeps it
    transfer: Transfer | None  # None for the end of the stream


class _Pump:
    """One direction of one connection: reads as fast as the sender sends and delivers each chunk at its shaped
    arrival time, in order.

    A bounded buffer, like a radio bearer's: once ``MAX_QUEUED_CHUNKS`` wait the pump stops reading, TCP pushes back
    on the sender, and a flood into a slow link costs neither memory nor shaper work."""

    def __init__(self, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 shaper: LinkShaper, observer: LinkObserver, order: itertools.count) -> None:
        self.direction, self.reader, self.writer = direction, reader, writer
        self.shaper, self.observer, self._order = shaper, observer, order
        self.waiting: deque[_Chunk] = deque()  # read, not yet written
        self.last_read = time.monotonic()  # when bytes last came from the sender
        self._changed = asyncio.Event()  # a chunk came or the timetable changed: delivery looks again
        self._space = asyncio.Event()  # a chunk left: the reader may read again

    def wake(self) -> None:
        """The chunks' arrival times changed."""
        self._changed.set()
        self._space.set()  # a chunk that was to break its link may arrive now: reading may go on

    async def run(self) -> None:
        """Until the sender closes and everything was delivered; LinkDown when a chunk's link went down."""
        reading, delivery = asyncio.create_task(self._read()), asyncio.create_task(self._deliver())
        try:
            await asyncio.gather(reading, delivery)
        finally:
            reading.cancel()
            delivery.cancel()
            self.writer.close()

    async def _read(self) -> None:
        while True:
            # Paused while the buffer is full, and while a chunk waits for its link to break: nothing read after
            # it would be delivered (unless a new share re-times it first), so reading it would be wasted work.
            while len(self.waiting) >= MAX_QUEUED_CHUNKS or self._breaks():
                self._space.clear()
                await self._space.wait()
            data = await self.reader.read(CHUNK_BYTES)
            now = self.last_read = time.monotonic()
            transfer = self.shaper.send(self.direction, len(data), now) if data else None
            self.waiting.append(_Chunk(data, now, next(self._order), transfer))
            self._changed.set()
            if transfer is None:
                return

    def _breaks(self) -> bool:
        return any(chunk.transfer is not None and chunk.transfer.down is not None for chunk in self.waiting)

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            if not self.waiting:
                await self._changed.wait()
                continue
            head = self.waiting[0]
            if head.transfer is not None:
                wait = head.transfer.arrival - time.monotonic()
                if wait > 0:  # sleep until it arrives, or until it is re-timed
                    timer = loop.call_later(wait, self._changed.set)
                    try:
                        await self._changed.wait()
                    finally:
                        timer.cancel()
                    continue
                if head.transfer.down is not None:
                    raise head.transfer.down
            self.waiting.popleft()
            self._space.set()
            if head.transfer is None:
                return
            self.writer.write(head.data)
            await self.writer.drain()
            self.observer.delivered(self.direction, len(head.data),
                                    max(0.0, head.transfer.arrival - head.sent - self.shaper.one_way_delay_s))


class ShapingProxy:
    """Listens for devices; each connection goes to ``upstream()`` (resolved per connection: associations
    may change) through ``shaper``."""

    def __init__(self, listen_host: str, listen_port: int, upstream: Callable[[], tuple[str, int]],
                 shaper: LinkShaper, observer: LinkObserver | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.listen_host, self.listen_port = listen_host, listen_port
        self.upstream = upstream
        self.shaper = shaper
        self.observer = observer or LinkObserver()
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[asyncio.Task, float] = {}  # each connection's handler and when it opened
        self._pumps: set[_Pump] = set()
        self._pumps_of: dict[asyncio.Task, list[_Pump]] = {}
        self._order = itertools.count()
        self._refusals = QuietLog()

    @classmethod
    def to(cls, upstream_address: str, shaper: LinkShaper, listen_host: str = "127.0.0.1") -> "ShapingProxy":
        """A proxy on a free local port towards one fixed upstream HOST:PORT."""
        upstream = split_address(upstream_address)
        return cls(listen_host, 0, lambda: upstream, shaper)

    async def start(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self.listen_port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def reschedule(self) -> None:
        """The link's rate changed by decision: re-time the bytes waiting in it from now (from any thread; done on
        the proxy's event loop)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reschedule_now)

    def _reschedule_now(self) -> None:
        now = time.monotonic()
        for direction in Direction:
            pumps = [pump for pump in self._pumps if pump.direction is direction]
            waiting = sorted((chunk for pump in pumps for chunk in pump.waiting if chunk.transfer is not None),
                             key=lambda chunk: chunk.order)
            self.shaper.reschedule(direction, [chunk.transfer for chunk in waiting], now)
            for pump in pumps:
                pump.wake()

    def _idlest(self, now: float) -> asyncio.Task | None:
        """The connection nothing crossed for the longest, if that is at least IDLE_EVICT_S."""
        def idle_since(task: asyncio.Task) -> float:
            return max([self._connections[task], *(pump.last_read for pump in self._pumps_of.get(task, ()))])

        task = min(self._connections, key=idle_since, default=None)
        return task if task is not None and now - idle_since(task) >= IDLE_EVICT_S else None

    async def _handle(self, device_reader: asyncio.StreamReader, device_writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            idle = self._idlest(time.monotonic())
            self.observer.connection_refused()
            if idle is None:
                self._refusals.warning("full", f"port {self.listen_host}:{self.listen_port} already carries "
                                               f"{self.max_connections} busy connections: a new one was closed")
                device_writer.transport.abort()
                return
            self._refusals.warning("idle", f"port {self.listen_host}:{self.listen_port} is full: closed a "
                                           f"connection idle for {IDLE_EVICT_S:g} s or more for a new one")
            self._connections.pop(idle, None)
            idle.cancel()
        task = asyncio.current_task()
        self._connections[task] = time.monotonic()
        task.add_done_callback(lambda done: self._connections.pop(done, None))
        upstream = self.upstream()
        try:
            edge_reader, edge_writer = await asyncio.open_connection(*upstream)
        except OSError as error:
            log.warning("cannot reach upstream %s:%s: %s", *upstream, error)
            device_writer.close()
            return
        pumps = [_Pump(Direction.UP, device_reader, edge_writer, self.shaper, self.observer, self._order),
                 _Pump(Direction.DOWN, edge_reader, device_writer, self.shaper, self.observer, self._order)]
        self._pumps.update(pumps)
        self._pumps_of[task] = pumps
        running = [asyncio.create_task(pump.run()) for pump in pumps]
        try:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
            if any(isinstance(t.exception(), LinkDown) for t in done if not t.cancelled()):
                log.warning("link to %s:%s down (outage over the limit): connection closed", *upstream)
                self.observer.link_down()
                for writer in (device_writer, edge_writer):
                    writer.transport.abort()
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            self._pumps.difference_update(pumps)
            self._pumps_of.pop(task, None)
            for task in running:
                task.cancel()
            try:
                await asyncio.gather(*running, return_exceptions=True)
            except asyncio.CancelledError:
                pass  # stopping: the handler must end normally (asyncio's stream callback reads its exception)


class ProxyThread:
    """Runs ShapingProxies on their own event loop in a background thread (for in-process benches)."""

    def __init__(self, *proxies: ShapingProxy) -> None:
        self.proxies = proxies
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="linkemu", daemon=True)

    def __enter__(self) -> "ProxyThread":
        self._thread.start()
        for proxy in self.proxies:
            asyncio.run_coroutine_threadsafe(proxy.start(), self._loop).result(timeout=10)
        return self

    @property
    def address(self) -> str:
        """The (first) proxy's listening address."""
        return f"{self.proxies[0].listen_host}:{self.proxies[0].listen_port}"

    def __exit__(self, *exc) -> None:
        for proxy in self.proxies:
            asyncio.run_coroutine_threadsafe(proxy.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
