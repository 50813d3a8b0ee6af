"""Runs an edge server: target engine, gRPC EdgeService (+ health, reflection), Prometheus metrics.

Devices (device certificates) may call EdgeService, the controller and admins EdgeControl; health and reflection
are open to anyone the transport admits.  SIGTERM drains the edge (drain.py) before it stops.
"""

from __future__ import annotations

import asyncio
import logging

from edge_server.audit import VerificationLogWriter
from edge_server.compute_shares import ComputeShares
from edge_server.config import EdgeConfig
from edge_server.control import EdgeControlServicer
from edge_server.drain import Drain
from edge_server.engines import make_engine
from edge_server.metrics import EdgeMetrics
from edge_server.pacing import EdgePacing
from edge_server.scheduler import ShareScheduler
from edge_server.service import EdgeServicer, info_reply
from edge_server.sessions import SessionRegistry
from edge_server.verification import Verifier
from tandem.auth import client_token
from tandem.daemon import Daemon
from tandem.edge_model import EdgeTiming
from tandem.pacing import Pacer
from tandem.profiles import load_profile
from tandem.rpc import ADMINS, DEVICES, Access, make_server
from tandem.tls import Transport
from tandem.wire.v1 import control_pb2, control_pb2_grpc, edge_pb2, edge_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = edge_pb2.DESCRIPTOR.services_by_name["EdgeService"].full_name
CONTROL_SERVICE_NAME = control_pb2.DESCRIPTOR.services_by_name["EdgeControl"].full_name
ACCESS = Access({SERVICE_NAME: DEVICES, CONTROL_SERVICE_NAME: ADMINS})


def _pacing(config: EdgeConfig, metrics: EdgeMetrics) -> EdgePacing | None:
    options = config.pacing
    if options.dilation == 0:
        return None
    profile = load_profile(options.profile)
    log.info("pacing the edge of profile %s (compute scale %g, %d tokens per step) at dilation %g", profile.name,
             options.compute_scale, config.engine_step_tokens, options.dilation)
    timing = EdgeTiming(profile.edge, options.compute_scale, config.engine_step_tokens)
    return EdgePacing(timing, Pacer(options.dilation, metrics.count_paced_step))


async def serve(config: EdgeConfig, transport: Transport) -> None:
    admin_token = client_token(None)  # optional here: over TLS the controller's certificate suffices
    engine = make_engine(config)
    log.info("starting %s target engine", config.engine)
    await engine.start()
    metrics = EdgeMetrics()
    registry = SessionRegistry(config.max_sessions, config.idle_timeout_s,
                               per_identity=config.max_sessions_per_identity, open_rate=config.open_rate_per_s,
                               commit_idle=config.commit_idle_s)
    metrics.sessions_active.set_function(lambda: len(registry))  # read at scrape time: never stale
    drain = Drain()
    shares = ComputeShares(config.edge_id or 0)
    scheduler = ShareScheduler(engine, shares, metrics, config.engine_step_tokens, config.batch_window_s,
                               _pacing(config, metrics))
    audit = VerificationLogWriter(config.verification_log) if config.verification_log else None
    verifier = Verifier(engine, scheduler, metrics, audit)
    server = make_server(transport, ACCESS, admin_token, config.max_message_bytes)
    reply = info_reply(verifier, config.max_draft_length, config.max_sessions, config.edge_id, config.pacing.dilation)
    edge_pb2_grpc.add_EdgeServiceServicer_to_server(
        EdgeServicer(verifier, registry, metrics, reply, config.max_draft_length, config.max_request_tokens, drain),
        server)
    control_pb2_grpc.add_EdgeControlServicer_to_server(
        EdgeControlServicer(shares, scheduler, registry, verifier, metrics, drain), server)
    async with Daemon("edge") as daemon:
        port = daemon.listen(server, transport, f"{config.host}:{config.port}",
                             (SERVICE_NAME, CONTROL_SERVICE_NAME), "the edge")
        daemon.serve_metrics(metrics.registry, config.host, config.metrics_port)
        # The scheduler runs the blocks in flight: it stops only once the drain finished them.
        tasks = [asyncio.create_task(scheduler.run_forever()), asyncio.create_task(registry.reap_forever())]
        metrics_note = f", metrics on {daemon.metrics_url}" if daemon.metrics_url else ""
        ready = f"edge ready on {config.host}:{port} (engine {config.engine}, {transport.describe()}{metrics_note})"
        await daemon.run([ready], {"address": f"{config.host}:{port}"}, drain=lambda: drain.finish(config.drain_s))
    for task in tasks:
        task.cancel()
    await engine.stop()
    if audit is not None:
        audit.close()
