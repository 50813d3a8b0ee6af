"""Runs the controller daemon: state, control loop, gRPC services (+ health, reflection), Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import signal

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from controller.config import ControllerConfig
from controller.loop import ControlLoop
from controller.metrics import ControllerMetrics
from controller.service import ControllerAdminServicer, ControllerServicer
from controller.state import ControllerState
from tandem.auth import load_or_create_token
from tandem.readiness import announce_ready
from tandem.rpc import ADMINS, DEVICES, OPERATORS, Access, make_server
from tandem.tls import Transport, reload_certificates_on_sighup, warn_if_plaintext
from tandem.wire.v1 import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)
SERVICES = [control_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("Controller", "ControllerAdmin")]
# Devices follow their allocation and report; the operator (the admin certificate; in plaintext the admin token)
# swaps policies.
ACCESS = Access({SERVICES[0]: DEVICES | ADMINS, SERVICES[1]: OPERATORS})


class StartError(Exception):
    pass


async def serve(config: ControllerConfig, state: ControllerState, transport: Transport) -> None:
    if transport.secure:  # the admin certificate administers; a token would grant nothing over TLS
        token, token_note = None, "admin: the admin certificate (mutual TLS)"
        if config.admin_token_file is not None:
            log.warning("admin_token_file is ignored over TLS: only the admin certificate administers")
    else:
        token, token_note = load_or_create_token(config.admin_token_file, state.path)
    stored = state.load_policy()  # a policy swapped at run time survives a restart...
    state.save_topology(config.topology_json())
    metrics = ControllerMetrics()
    # Over TLS the controller's certificate is its credential with edges and the link emulator (token is None); in
    # plaintext it sends the admin token, which they check when they were given it.
    try:
        loop = ControlLoop(config, state, stored or config.policy, metrics, transport, token)
    except ValueError as error:
        if stored is None or stored == config.policy:
            raise StartError(str(error)) from None
        # ...unless it can no longer be made (its checkpoint gone or refused): the configured one then.
        log.warning("the stored policy %s cannot be used (%s); starting with the configured %s", stored.name, error,
                    config.policy.name)
        try:
            loop = ControlLoop(config, state, config.policy, metrics, transport, token)
        except ValueError as error:
            raise StartError(str(error)) from None
    policy = loop.policy_spec
    state.save_policy(policy)
    server = make_server(transport, ACCESS, token)
    control_pb2_grpc.add_ControllerServicer_to_server(ControllerServicer(loop), server)
    control_pb2_grpc.add_ControllerAdminServicer_to_server(ControllerAdminServicer(loop), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = transport.add_port(server, config.listen)
    except OSError as error:
        raise StartError(str(error)) from None
    warn_if_plaintext(transport, "the controller")
    metrics_note, metrics_port = "", None
    if config.metrics_port is not None:
        host = config.listen.rpartition(":")[0].strip("[]")
        http_server, _ = start_http_server(config.metrics_port, addr=host, registry=metrics.registry)
        metrics_port = http_server.server_port
        metrics_note = f", metrics on http://{host}:{metrics_port}/metrics"
    await server.start()
    for name in (*SERVICES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = asyncio.create_task(loop.run())
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    reload_certificates_on_sighup()
    log.info("%s; state in %s; policy %s", token_note, state.path, policy.name)
    host = config.listen.rpartition(":")[0]
    print(f"controller ready on {host}:{port} (policy {policy.name}{metrics_note})", flush=True)
    announce_ready("controller", address=f"{host}:{port}", metrics_port=metrics_port)
    await asyncio.wait([running, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if running.done() and running.exception():
        log.error("control loop failed", exc_info=running.exception())
    log.info("shutting down")
    running.cancel()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=1.0)
    await loop.close()
    state.close()
