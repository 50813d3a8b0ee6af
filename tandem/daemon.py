"""The lifecycle every Tandem daemon shares (edge server, controller, link emulator): serve, announce, drain, stop.

A daemon builds its own gRPC server (its servicers and access rules), then hands it to a ``Daemon``, which adds
health (grpc.health.v1, SERVING once started) and reflection, starts the Prometheus endpoint when a port is
configured, and on ``run``: makes SIGINT/SIGTERM stop it and SIGHUP reload the TLS certificates (tandem/tls.py),
starts the server, prints the daemon's readiness lines and the TANDEM-READY line (tandem/readiness.py), then waits.
Stopping goes in one order, so that nothing a caller was promised is cut short:

1. health reports NOT_SERVING (orchestrators and load checks look elsewhere);
2. the daemon's ``drain`` hook finishes what it accepted (an edge: the blocks in flight, edge_server/drain.py);
3. leaving the ``async with`` block, the gRPC server stops (calls still open get ``STOP_GRACE_S``), and the metrics
   server is shut down and its port closed, also when the daemon failed on the way.

What follows the block is the daemon's own teardown (engines, state files), with no caller left.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from tandem.readiness import announce_ready
from tandem.tls import Transport, reload_certificates_on_sighup, warn_if_plaintext

log = logging.getLogger(__name__)
STOP_GRACE_S = 1.0  # what calls still open when the server stops get to finish


class Daemon:
    """One daemon's serving lifecycle: ``async with Daemon(kind) as daemon``, then ``listen`` and ``serve_metrics``
    (both optional), then ``run`` until a stop signal.  ``kind`` names the daemon in its TANDEM-READY line."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.metrics_port: int | None = None
        self.metrics_url: str | None = None  # http://HOST:PORT/metrics, once serve_metrics started it
        self._server: grpc.aio.Server | None = None
        self._services: tuple[str, ...] = ()
        self._health = health.aio.HealthServicer()
        self._metrics: WSGIServer | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> "Daemon":
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            if self._server is not None:
                await self._server.stop(grace=STOP_GRACE_S)
        finally:
            if self._metrics is not None:
                self._metrics.shutdown()  # ends its serving thread...
                self._metrics.server_close()  # ...and frees the port

    def listen(self, server: grpc.aio.Server, transport: Transport, address: str, services: Sequence[str],
               who: str) -> int:
        """Serve ``server`` (its servicers added) on ``address`` (port 0: any free one), with health and reflection
        for ``services``; returns the port.  OSError when it cannot listen.  ``who``: the daemon as its plaintext
        warning names it."""
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self._server, self._services = server, tuple(services)
        port = transport.add_port(server, address)
        warn_if_plaintext(transport, who)
        return port

    def serve_metrics(self, registry: CollectorRegistry, host: str, port: int | None) -> None:
        """Serve ``registry`` on http://host:port/metrics (port 0: any free one; None: no metrics endpoint)."""
        if port is None:
            return
        self._metrics, _ = start_http_server(port, addr=host, registry=registry)
        self.metrics_port = self._metrics.server_port
        self.metrics_url = f"http://{host}:{self.metrics_port}/metrics"

    def stop(self) -> None:
        """What SIGINT and SIGTERM do: ``run`` winds down and returns."""
        self._stop.set()

    async def run(self, ready: Sequence[str], endpoints: Mapping[str, Any],
                  drain: Callable[[], Awaitable[None]] | None = None, watch: Sequence[asyncio.Task] = ()) -> None:
        """Start serving, print the ``ready`` lines and announce ``endpoints`` (with the metrics port), then wait for
        a stop signal, or for a ``watch`` task to end (a daemon without its main loop serves nothing: it stops
        too); health then reports NOT_SERVING and ``drain`` runs."""
        for sig in (signal.SIGINT, signal.SIGTERM):  # before serving: a stop while starting is a graceful one too
            asyncio.get_running_loop().add_signal_handler(sig, self.stop)
        reload_certificates_on_sighup()
        if self._server is not None:
            await self._server.start()
            for name in (*self._services, ""):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        for line in ready:
            print(line, flush=True)
        announce_ready(self.kind, metrics_port=self.metrics_port, **endpoints)
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stopping, *watch], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for task in watch:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s failed", task.get_name(), exc_info=task.exception())
        log.info("shutting down")
        await self._health.enter_graceful_shutdown()
        if drain is not None:
            await drain()
