"""Runs an edge server: target engine, gRPC EdgeService (+ health, reflection), Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from edge_server.audit import VerificationLogWriter
from edge_server.batcher import VerifyBatcher
from edge_server.config import EdgeConfig
from edge_server.engines import make_engine
from edge_server.metrics import EdgeMetrics
from edge_server.service import EdgeServicer
from edge_server.sessions import SessionRegistry
from tandem.wire.v1 import edge_pb2, edge_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = edge_pb2.DESCRIPTOR.services_by_name["EdgeService"].full_name


async def serve(config: EdgeConfig) -> None:
    engine = make_engine(config)
    log.info("starting %s target engine", config.engine)
    await engine.start()
    metrics = EdgeMetrics()
    registry = SessionRegistry(config.max_sessions, config.idle_timeout_s)
    batcher = VerifyBatcher(engine, metrics, config.batch_window_s)
    audit = VerificationLogWriter(config.verification_log) if config.verification_log else None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
        ]
    )
    edge_pb2_grpc.add_EdgeServiceServicer_to_server(
        EdgeServicer(engine, registry, batcher, metrics, config.max_draft_length, audit), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    metrics_note = ""
    if config.metrics_port is not None:
        http_server, _ = start_http_server(config.metrics_port, addr=config.host, registry=metrics.registry)
        metrics_note = f", metrics on http://{config.host}:{http_server.server_port}/metrics"
    await server.start()
    for name in (SERVICE_NAME, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    tasks = [asyncio.create_task(batcher.run_forever()), asyncio.create_task(registry.reap_forever())]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print(f"edge ready on {config.host}:{port} (engine {config.engine}{metrics_note})", flush=True)
    await stop.wait()
    log.info("shutting down")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=2.0)
    for task in tasks:
        task.cancel()
    await engine.stop()
    if audit is not None:
        audit.close()
