"""The controller's gRPC servicers: devices (allocation watch, reports), status, and administration.

They parse and validate requests, delegate to the control loop and its telemetry, and map errors to statuses;
nothing here decides anything.  Each identity (device certificate) may hold ``watches_per_identity`` allocation
watches and report at ``report_rate_per_s`` (the config): one device cannot tie up the controller's streams or
flood its telemetry.  Plaintext callers have no identity and no such limits (development only).
"""

from __future__ import annotations

import asyncio
import math
from contextlib import nullcontext

import grpc

from controller.board import UserAllocation
from controller.config import PolicySpec
from controller.loop import ControlLoop
from controller.policies import available
from controller.telemetry import DeviceReport
from tandem.limits import LimitExceeded, RateLimit, StreamLimit
from tandem.rpc import Caller, caller_of
from tandem.wire.v1 import control_pb2 as pb
from tandem.wire.v1 import control_pb2_grpc

MAX_PARAM_LENGTH = 256


def allocation_message(item: UserAllocation, address: str) -> pb.UserAllocation:
    a = item.allocation
    return pb.UserAllocation(version=item.version, slot=item.slot, user=a.user, edge=a.edge, edge_address=address,
                             bandwidth_share=a.bandwidth_share, compute_share=a.compute_share,
                             draft_length=a.draft_length)


class ControllerServicer(control_pb2_grpc.ControllerServicer):
    def __init__(self, loop: ControlLoop) -> None:
        self._loop = loop
        self._users = {user.id for user in loop.config.users}
        self._watches = StreamLimit(loop.config.watches_per_identity)
        rate = loop.config.report_rate_per_s
        self._reports = RateLimit(rate, burst=max(1, round(2 * rate)))

    async def WatchAllocation(self, request: pb.WatchAllocationRequest, context):
        caller = await _check_user(self._loop, context, request.user)
        if request.user not in self._users:
            await _refuse(self._loop, context, "NOT_FOUND", f"user {request.user} is not in the topology")
        try:
            with self._watches.hold(caller.identity, "allocation watches") if caller.identity else nullcontext():
                async for item in self._loop.board.watch(request.user):
                    yield allocation_message(item, self._loop.config.edge(item.allocation.edge).address)
        except LimitExceeded as error:
            await _refuse(self._loop, context, "RESOURCE_EXHAUSTED", str(error))

    async def Report(self, request: pb.UserReport, context) -> pb.ReportAck:
        caller = await _check_user(self._loop, context, request.user)
        if caller.identity and not self._reports.take(caller.identity):
            await _refuse(self._loop, context, "RESOURCE_EXHAUSTED", "this identity reports faster than "
                          f"{self._loop.config.report_rate_per_s:g} per second; the newest report within the rate "
                          "is the one used")
        try:
            self._loop.telemetry.record_report(request.user, DeviceReport(
                request.draft_seconds_per_token, request.acceptance, request.pending_tokens, request.round_seconds))
        except ValueError as error:
            await _refuse(self._loop, context, "INVALID_ARGUMENT", str(error))
        return pb.ReportAck()

    async def GetStatus(self, request: pb.StatusRequest, context) -> pb.ControllerStatus:
        loop = self._loop
        latest = loop.latest
        status = pb.ControllerStatus(policy=loop.policy_spec.name, decision_seconds=loop.decision_seconds,
                                     policy_params={k: str(v) for k, v in loop.policy_spec.params.items()},
                                     estimated_mean_latency_s=loop.estimated_mean_latency)
        if latest is not None:
            status.version, status.slot, status.decided_at = latest.version, latest.decision.slot, latest.decided_at
            status.allocations.extend(
                allocation_message(UserAllocation(latest.version, latest.decision.slot, a),
                                   loop.config.edge(a.edge).address) for a in latest.decision.allocations)
        for edge in loop.config.edges:
            health = loop.telemetry.edges[edge.id]
            load = health.load
            status.edges.append(pb.EdgeStatus(
                edge=edge.id, address=edge.address, healthy=health.healthy,
                sessions=load.sessions if load else 0, queue_depth=load.queue_depth if load else 0,
                shares_version=load.shares_version if load else 0))
        return status


class ControllerAdminServicer(control_pb2_grpc.ControllerAdminServicer):
    """Every call here is an admin's: tandem/rpc.py has checked the admin certificate or token before."""

    def __init__(self, loop: ControlLoop) -> None:
        self._loop = loop

    async def ListPolicies(self, request: pb.ListPoliciesRequest, context) -> pb.PolicyList:
        active = self._loop.policy_spec
        return pb.PolicyList(policies=[
            pb.PolicyInfo(name=name, description=_summary(cls.__doc__), active=name == active.name,
                          params={k: str(v) for k, v in active.params.items()} if name == active.name else {})
            for name, cls in sorted(available().items())])

    async def GetPolicy(self, request: pb.GetPolicyRequest, context) -> pb.PolicyInfo:
        return self._active_info()

    async def SetPolicy(self, request: pb.SetPolicyRequest, context) -> pb.PolicyInfo:
        try:
            params = {_param_name(key): parse_param(value) for key, value in request.params.items()}
            if request.checkpoint:
                params["checkpoint"] = _bounded(request.checkpoint, "checkpoint")
            spec = PolicySpec(name=request.name, seed=self._loop.policy_spec.seed, params=params)
            policy = await asyncio.to_thread(self._loop.make, spec)  # a learned policy loads for seconds
            self._loop.set_policy(spec, policy)
        except ValueError as error:  # pydantic's ValidationError is one too
            await _refuse(self._loop, context, "INVALID_ARGUMENT", str(error))
        return self._active_info()

    def _active_info(self) -> pb.PolicyInfo:
        spec = self._loop.policy_spec
        return pb.PolicyInfo(name=spec.name, description=_summary(type(self._loop.policy).__doc__), active=True,
                             params={k: str(v) for k, v in spec.params.items()})


def parse_param(value: str) -> str | int | float | bool:
    """A ``--param k=v`` value: a bool, int or finite float when it reads as one, else the string (ValueError
    for a value too long or a number that is not finite)."""
    _bounded(value, "a parameter value")
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        raise ValueError(f"parameter value {value!r} is not a finite number")
    return number


def _param_name(key: str) -> str:
    if not key.isidentifier() or len(key) > MAX_PARAM_LENGTH:
        raise ValueError(f"parameter name {key[:64]!r} is not an identifier")
    return key


def _bounded(value: str, what: str) -> str:
    if len(value) > MAX_PARAM_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_PARAM_LENGTH} characters")
    return value


def _summary(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


async def _check_user(loop: ControlLoop, context, user: int) -> Caller:
    caller = caller_of(context)
    if not caller.may_act_for(user):
        await _refuse(loop, context, "PERMISSION_DENIED", f"{caller.identity} may not act for user {user}")
    return caller


async def _refuse(loop: ControlLoop, context, code: str, message: str) -> None:
    loop.metrics.rejected.labels(code).inc()
    await context.abort(getattr(grpc.StatusCode, code), message)
