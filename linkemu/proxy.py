"""A user-space TCP proxy that carries a device's traffic to its edge through a ``LinkShaper``.

Works for any TCP protocol (gRPC/HTTP2 here) and needs no kernel support (netem is not available everywhere):
each chunk read from one side is written to the other at the time the shaper says it arrives, in order.  When
the shaper declares the link down (an outage longer than its limit), both sides are disconnected at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from linkemu.config import split_address
from linkemu.shaper import Direction, LinkDown, LinkShaper

log = logging.getLogger(__name__)
CHUNK_BYTES = 16 * 1024
MAX_QUEUED_CHUNKS = 256  # 4 MiB per direction and connection


class LinkObserver:
    """What a proxy reports about its link (the metrics implement it); the default ignores everything."""

    def delivered(self, direction: Direction, nbytes: int, shaping_delay_s: float) -> None:
        """``nbytes`` arrived; they spent ``shaping_delay_s`` queued and serialised (beyond the base delay)."""

    def link_down(self) -> None:
        """A connection was broken by an outage longer than the limit."""


class ShapingProxy:
    """Listens for devices; each connection goes to ``upstream()`` (resolved per connection: associations
    may change) through ``shaper``."""

    def __init__(self, listen_host: str, listen_port: int, upstream: Callable[[], tuple[str, int]],
                 shaper: LinkShaper, observer: LinkObserver | None = None) -> None:
        self.listen_host, self.listen_port = listen_host, listen_port
        self.upstream = upstream
        self.shaper = shaper
        self.observer = observer or LinkObserver()
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()

    @classmethod
    def to(cls, upstream_address: str, shaper: LinkShaper, listen_host: str = "127.0.0.1") -> "ShapingProxy":
        """A proxy on a free local port towards one fixed upstream HOST:PORT."""
        upstream = split_address(upstream_address)
        return cls(listen_host, 0, lambda: upstream, shaper)

    async def start(self) -> int:
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

    async def _handle(self, device_reader: asyncio.StreamReader, device_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        upstream = self.upstream()
        try:
            edge_reader, edge_writer = await asyncio.open_connection(*upstream)
        except OSError as error:
            log.warning("cannot reach upstream %s:%s: %s", *upstream, error)
            device_writer.close()
            return
        pumps = [asyncio.create_task(self._pump(device_reader, edge_writer, Direction.UP)),
                 asyncio.create_task(self._pump(edge_reader, device_writer, Direction.DOWN))]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            if any(isinstance(t.exception(), LinkDown) for t in done if not t.cancelled()):
                log.warning("link to %s:%s down (outage over the limit): connection closed", *upstream)
                self.observer.link_down()
                for writer in (device_writer, edge_writer):
                    writer.transport.abort()
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for pump in pumps:
                pump.cancel()
            try:
                await asyncio.gather(*pumps, return_exceptions=True)
            except asyncio.CancelledError:
                pass  # stopping: the handler must end normally (asyncio's stream callback reads its exception)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction) -> None:
        """Read as fast as the sender sends; deliver each chunk at its shaped arrival time, in order."""
        # A bounded buffer, like a radio bearer's: once it holds MAX_QUEUED_CHUNKS the pump stops reading, TCP
        # pushes back on the sender, and a flood into a slow link costs neither memory nor shaper work.
        in_flight: asyncio.Queue[tuple[float, float, bytes | LinkDown]] = asyncio.Queue(MAX_QUEUED_CHUNKS)
        base_delay = self.shaper.one_way_delay_s

        async def deliver() -> None:
            while True:
                sent, arrival, chunk = await in_flight.get()
                delay = arrival - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if isinstance(chunk, LinkDown):
                    raise chunk
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
                self.observer.delivered(direction, len(chunk), max(0.0, arrival - sent - base_delay))

        delivery = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                now = time.monotonic()
                try:
                    await in_flight.put((now, self.shaper.delivery_time(direction, len(chunk), now), chunk))
                except LinkDown as down:
                    await in_flight.put((now, down.at, down))
                    break
            else:
                await in_flight.put((0.0, 0.0, b""))
            await delivery
        finally:
            delivery.cancel()
            writer.close()


class ProxyThread:
    """Runs ShapingProxies on their own event loop in a background thread (for in-process benches and demos)."""

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
