"""Runs the controller daemon: state, control loop, gRPC services (+ health, reflection), Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from controller.config import ControllerConfig
from controller.loop import ControlLoop
from controller.metrics import ControllerMetrics
from controller.service import ControllerAdminServicer, ControllerServicer
from controller.state import ControllerState
from tandem.auth import load_or_create_token
from tandem.daemon import Daemon
from tandem.rpc import ADMINS, DEVICES, OPERATORS, Access, make_server
from tandem.tls import Transport
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
    host = config.listen.rpartition(":")[0]
    async with Daemon("controller") as daemon:
        try:
            port = daemon.listen(server, transport, config.listen, SERVICES, "the controller")
        except OSError as error:
            raise StartError(str(error)) from None
        daemon.serve_metrics(metrics.registry, host.strip("[]"), config.metrics_port)
        running = asyncio.create_task(loop.run(), name="control loop")

        async def stop_deciding() -> None:
            running.cancel()

        log.info("%s; state in %s; policy %s", token_note, state.path, policy.name)
        metrics_note = f", metrics on {daemon.metrics_url}" if daemon.metrics_url else ""
        await daemon.run([f"controller ready on {host}:{port} (policy {policy.name}{metrics_note})"],
                         {"address": f"{host}:{port}"}, drain=stop_deciding, watch=[running])
    await loop.close()
    state.close()
