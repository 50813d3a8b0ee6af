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

from linkemu.assignments import Assignment
from linkemu.emulator import LinkEmulator
from tandem.rpc import ADMINS, Access, make_server
from tandem.tls import Transport
from tandem.wire.v1 import linkemu_pb2 as pb
from tandem.wire.v1 import linkemu_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LinkControl"].full_name
ACCESS = Access({SERVICE_NAME: ADMINS})


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


def control_server(emulator: LinkEmulator, transport: Transport, admin_token: str | None = None) -> grpc.aio.Server:
    """A gRPC server with the control service, for the daemon's lifecycle (tandem/daemon.py) to serve."""
    server = make_server(transport, ACCESS, admin_token)
    linkemu_pb2_grpc.add_LinkControlServicer_to_server(LinkControlService(emulator), server)
    return server
