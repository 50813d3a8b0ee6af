"""A user-space TCP proxy that carries a device's traffic to its edge through a ``LinkShaper``.

Works for any TCP protocol (gRPC/HTTP2 here) and needs no kernel support (netem is not available everywhere):
each chunk read from one side is written to the other at the time the shaper says it arrives, in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from linkemu.shaper import Direction, LinkShaper

log = logging.getLogger(__name__)
CHUNK_BYTES = 16 * 1024


class ShapingProxy:
    def __init__(self, listen_host: str, listen_port: int, upstream_host: str, upstream_port: int,
                 shaper: LinkShaper) -> None:
        self.listen_host, self.listen_port = listen_host, listen_port
        self.upstream = (upstream_host, upstream_port)
        self.shaper = shaper
        self.bytes = {Direction.UP: 0, Direction.DOWN: 0}
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()

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
        try:
            edge_reader, edge_writer = await asyncio.open_connection(*self.upstream)
        except OSError as error:
            log.warning("cannot reach upstream %s:%s: %s", *self.upstream, error)
            device_writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(device_reader, edge_writer, Direction.UP),
                self._pump(edge_reader, device_writer, Direction.DOWN),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # the proxy is stopping; the pumps closed their writers

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction) -> None:
        """Read as fast as the sender sends; deliver each chunk at its shaped arrival time, in order."""
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                arrival, chunk = await in_flight.get()
                if not chunk:
                    break
                delay = arrival - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(chunk)
                await writer.drain()
                self.bytes[direction] += len(chunk)

        delivery = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                await in_flight.put((self.shaper.delivery_time(direction, len(chunk), time.monotonic()), chunk))
            await in_flight.put((0.0, b""))
            await delivery
        finally:
            delivery.cancel()
            writer.close()


class ProxyThread:
    """Runs a ShapingProxy on its own event loop in a background thread (for in-process benches and demos)."""

    def __init__(self, proxy: ShapingProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="linkemu", daemon=True)

    def __enter__(self) -> "ProxyThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(timeout=10)
        return self

    @property
    def address(self) -> str:
        return f"{self.proxy.listen_host}:{self.proxy.listen_port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
