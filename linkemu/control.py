"""The emulator's control service (proto/tandem/wire/v1/linkemu.proto): measurement reports out, assignments in.

This is the controller's handle on the radio side: it watches the per-pair SINR every slot and sets each user's
association and bandwidth share; a testbed also seeks the trace, to play every policy it compares on the same
radio conditions. Requests are validated as a whole; a bad one is refused with INVALID_ARGUMENT
and leaves the table as it was.  Only the controller or an admin may call it (a controller/admin certificate, or
the admin token; tandem/rpc.py).
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from linkemu.assignments import Assignment
from linkemu.emulator import LinkEmulator
from tandem.rpc import ADMINS, Access, make_server
from tandem.tls import Transport, warn_if_plaintext
from tandem.wire.v1 import linkemu_pb2 as pb
from tandem.wire.v1 import linkemu_pb2_grpc

log = logging.getLogger(__name__)
ACCESS = Access({pb.DESCRIPTOR.services_by_name["LinkControl"].full_name: ADMINS})


def _table(assignments: dict[int, Assignment]) -> pb.Assignments:
    return pb.Assignments(assignments=[
        pb.UserAssignment(user=user, edge=assignment.edge, share=assignment.share)
        for user, assignment in sorted(assignments.items())])


class LinkControlService(linkemu_pb2_grpc.LinkControlServicer):
    def __init__(self, emulator: LinkEmulator) -> None:
        self.emulator = emulator

    async def WatchMeasurements(self, request: pb.WatchMeasurementsRequest, context):
        async for report in self.emulator.reports():
            yield report

    async def Assign(self, request: pb.AssignRequest, context) -> pb.Assignments:
        if not request.assignments:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no assignments given")
        changes: dict[int, Assignment] = {}
        for item in request.assignments:
            if item.user in changes:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"user {item.user} is assigned twice")
            changes[item.user] = Assignment(item.edge, item.share)
        try:
            table = self.emulator.assignments.assign(changes)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        log.info("assigned %s", ", ".join(f"user {user} -> edge {a.edge} share {a.share:g}"
                                          for user, a in sorted(changes.items())))
        return _table(table)

    async def GetAssignments(self, request: pb.GetAssignmentsRequest, context) -> pb.Assignments:
        return _table(self.emulator.assignments.snapshot())

    async def Seek(self, request: pb.SeekRequest, context) -> pb.MeasurementReport:
        try:
            return await self.emulator.seek(request.slot)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


async def start_control(emulator: LinkEmulator, host: str, port: int, transport: Transport,
                        admin_token: str | None = None) -> tuple[grpc.aio.Server, int]:
    """Serve the control service on host:port (0 = a free port); returns the server and its port."""
    server = make_server(transport, ACCESS, admin_token)
    linkemu_pb2_grpc.add_LinkControlServicer_to_server(LinkControlService(emulator), server)
    health_servicer = health.aio.HealthServicer()  # readiness for orchestrators (docker compose health checks)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound = transport.add_port(server, f"{host}:{port}")
    except OSError as error:
        raise OSError(f"control service {error}") from None
    warn_if_plaintext(transport, "the link emulator's control service")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound
