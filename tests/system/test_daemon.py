"""The lifecycle every daemon shares (tandem/daemon.py), on a daemon that serves nothing of its own, in this process.

Started on free ports, it reports SERVING and serves /metrics; SIGHUP reloads certificates without stopping it;
SIGTERM turns health to NOT_SERVING before the daemon's drain runs (while its server still answers), then the gRPC
and metrics ports close.  A main task that fails stops the daemon too.  The edge's drain on real work is
tests/system/test_faults.py, the SIGHUP rotation of real certificates tests/system/test_rotation.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from tandem.daemon import Daemon
from tandem.readiness import parse_ready
from tandem.rpc import Access, make_server
from tandem.tls import Transport

SERVICE = "tandem.test.Nothing"
PLAINTEXT = Transport()


async def _status(channel: grpc.aio.Channel, service: str = "") -> str:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                            timeout=5, wait_for_ready=True)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def _closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_serves_announces_drains_and_closes_its_ports(capsys, caplog):
    registry = CollectorRegistry()
    Counter("tandem_test_lifecycles", "lifecycles run", registry=registry).inc()
    seen: dict[str, object] = {}

    async def scenario() -> None:
        async with Daemon("test") as daemon:
            port = daemon.listen(make_server(PLAINTEXT, Access({})), PLAINTEXT, "127.0.0.1:0", [SERVICE], "the test")
            daemon.serve_metrics(registry, "127.0.0.1", 0)
            seen["ports"] = port, daemon.metrics_port
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                async def drain() -> None:  # the server still answers, and already says it is going
                    seen["draining"] = await _status(channel), await _status(channel, SERVICE)

                running = asyncio.create_task(daemon.run([f"test ready on 127.0.0.1:{port}"],
                                                         {"address": f"127.0.0.1:{port}"}, drain=drain))
                seen["serving"] = await _status(channel), await _status(channel, SERVICE)
                seen["metrics"] = await asyncio.to_thread(_scrape, daemon.metrics_port)
                os.kill(os.getpid(), signal.SIGHUP)
                await asyncio.sleep(0.1)
                assert not running.done()
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.wait_for(running, 10)
        seen["closed"] = _closed(port), _closed(daemon.metrics_port)  # the daemon, and its servers, still referenced

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    port, metrics_port = seen["ports"]
    assert seen["serving"] == ("SERVING", "SERVING")
    assert "tandem_test_lifecycles_total 1.0" in seen["metrics"]
    assert seen["draining"] == ("NOT_SERVING", "NOT_SERVING")
    assert seen["closed"] == (True, True)
    assert "SIGHUP: no TLS server certificates to reload (plaintext)" in caplog.text
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"test ready on 127.0.0.1:{port}"
    assert parse_ready(lines[1]) == {"daemon": "test", "address": f"127.0.0.1:{port}", "metrics_port": metrics_port}


def test_a_failed_main_task_stops_the_daemon(caplog):
    async def fail() -> None:
        raise RuntimeError("lost the plot")

    async def scenario() -> None:
        async with Daemon("test") as daemon:
            task = asyncio.create_task(fail(), name="main loop")
            await asyncio.wait_for(daemon.run([], {}, watch=[task]), 10)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert "main loop failed" in caplog.text and "lost the plot" in caplog.text and "shutting down" in caplog.text
