"""The controller's gRPC clients: the link emulator (measurements in, assignments out) and the edges (compute
shares out, load in).  They translate between the wire and the controller's domain types; every call has a
deadline, so an unreachable component costs a slot at most, never the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from controller.policies.base import Allocation
from controller.telemetry import EdgeLoadSample
from controller.trust import ObservedUser
from tandem.rpc import bearer_metadata
from tandem.tls import Transport
from tandem.wire.v1 import control_pb2 as cpb
from tandem.wire.v1 import control_pb2_grpc, linkemu_pb2, linkemu_pb2_grpc

log = logging.getLogger(__name__)
RETRY_S = 1.0


@dataclass(frozen=True)
class Dialer:
    """How the controller reaches the components it controls: its transport, and the admin token (if any) its
    control calls carry."""

    transport: Transport
    admin_token: str | None = None

    def channel(self, address: str, role: str, edge_id: int | None = None) -> grpc.aio.Channel:
        return self.transport.aio_channel(address, role, edge_id=edge_id)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.admin_token)


class PushRefused(Exception):
    """A component answered a push with an error status (the message says which and why)."""


class EdgeClient:
    def __init__(self, edge: int, address: str, dial: Dialer) -> None:
        self.edge, self.address = edge, address
        self._channel = dial.channel(address, "edge", edge_id=edge)  # that edge's certificate, no other
        self._metadata = dial.metadata
        self._stub = control_pb2_grpc.EdgeControlStub(self._channel)

    async def load(self, timeout: float) -> EdgeLoadSample | None:
        """The edge's load, or None when it does not answer in time."""
        try:
            reply = await self._stub.GetLoad(cpb.GetLoadRequest(), timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError:
            return None
        return EdgeLoadSample(reply.sessions, reply.queue_depth, reply.verify_seconds_mean, reply.version,
                              reply.draining, {u.user: ObservedUser(u.remaining_tokens, u.sessions,
                                                                    u.recent_drafted_tokens, u.recent_accepted_tokens,
                                                                    u.recent_rejected_blocks)
                                               for u in reply.users})

    async def set_shares(self, version: int, shares: dict[int, float], timeout: float) -> None:
        try:
            await self._stub.SetShares(cpb.SetSharesRequest(version=version, shares=[
                cpb.ComputeShare(user=user, share=share) for user, share in sorted(shares.items())]), timeout=timeout,
                metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise PushRefused(f"edge {self.edge} ({self.address}): {error.code().name}: {error.details()}") from None

    async def close(self) -> None:
        await self._channel.close()


class LinkEmuClient:
    def __init__(self, address: str, dial: Dialer) -> None:
        self.address = address
        self._channel = dial.channel(address, "linkemu")
        self._metadata = dial.metadata
        self._stub = linkemu_pb2_grpc.LinkControlStub(self._channel)

    async def watch(self, on_report: Callable[[int, list[tuple[int, int, float, float]]], None]) -> None:
        """Feed every measurement report to ``on_report(slot, [(user, edge, se_up, se_down)])``; reconnects
        while the emulator is unreachable, until cancelled."""
        while True:
            try:
                async for report in self._stub.WatchMeasurements(linkemu_pb2.WatchMeasurementsRequest(),
                                                                 metadata=self._metadata):
                    on_report(report.slot, [(p.user, p.edge, p.se_up, p.se_down) for p in report.pairs])
            except grpc.aio.AioRpcError as error:
                log.warning("link emulator at %s: %s; retrying", self.address, error.code().name)
            await asyncio.sleep(RETRY_S)

    async def assign(self, allocations: list[Allocation], timeout: float) -> None:
        try:
            await self._stub.Assign(linkemu_pb2.AssignRequest(assignments=[
                linkemu_pb2.UserAssignment(user=a.user, edge=a.edge, share=a.bandwidth_share) for a in allocations]),
                timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise PushRefused(f"link emulator ({self.address}): {error.code().name}: {error.details()}") from None

    async def close(self) -> None:
        await self._channel.close()
