"""The EdgeControl gRPC servicer (proto/tandem/wire/v1/control.proto): compute shares in, load out."""

from __future__ import annotations

import logging

import grpc

from edge_server.compute_shares import ComputeShares, StaleVersion
from edge_server.drain import Drain
from edge_server.metrics import EdgeMetrics
from edge_server.observations import DraftCounts
from edge_server.scheduler import ShareScheduler
from edge_server.sessions import SessionRegistry
from edge_server.verification import Verifier
from tandem.wire.v1 import control_pb2 as pb
from tandem.wire.v1 import control_pb2_grpc

log = logging.getLogger(__name__)


class EdgeControlServicer(control_pb2_grpc.EdgeControlServicer):
    def __init__(self, shares: ComputeShares, scheduler: ShareScheduler, registry: SessionRegistry,
                 verifier: Verifier, metrics: EdgeMetrics, drain: Drain | None = None) -> None:
        self._drain = drain or Drain()
        self._shares = shares
        self._scheduler = scheduler
        self._registry = registry
        self._verifier = verifier
        self._metrics = metrics

    async def SetShares(self, request: pb.SetSharesRequest, context) -> pb.EdgeLoad:
        shares: dict[int, float] = {}
        for item in request.shares:
            if item.user in shares:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"user {item.user} is listed twice")
            shares[item.user] = item.share
        previous = self._shares.snapshot()
        try:
            changed = self._shares.set(request.version, shares)
        except StaleVersion as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if changed and shares != previous:
            self._metrics.compute_share.clear()  # a user who left this edge leaves no stale series
            for label, share in self._metrics.user_label.totals(shares).items():
                self._metrics.compute_share.labels(label).set(share)
            log.info("compute shares version %d: %s", request.version,
                     ", ".join(f"user {u} {s:.3f}" for u, s in sorted(shares.items())) or "none")
        self._metrics.shares_version.set(self._shares.version)
        return self._load()

    async def GetLoad(self, request: pb.GetLoadRequest, context) -> pb.EdgeLoad:
        return self._load()

    def _load(self) -> pb.EdgeLoad:
        shares = self._shares.snapshot()
        sessions = self._registry.sessions_by_user()
        remaining = self._registry.remaining_by_user(self._verifier.engine_info.max_context)
        observed = self._verifier.observations
        users = sorted((set(shares) | set(sessions) | set(self._scheduler.served_tokens)) - {None})
        return pb.EdgeLoad(
            version=self._shares.version,
            sessions=len(self._registry),
            queue_depth=len(self._scheduler),
            verify_seconds_mean=self._verifier.recent_verify_seconds,
            best_effort_jobs=self._scheduler.best_effort_jobs,
            draining=self._drain.active,
            users=[_user_load(u, shares.get(u, 0.0), sessions.get(u, 0), self._scheduler.served_tokens.get(u, 0),
                              remaining.get(u, 0), observed.counts(u)) for u in users])


def _user_load(user: int, share: float, sessions: int, served: int, remaining: int,
               observed: DraftCounts) -> pb.UserLoad:
    return pb.UserLoad(user=user, share=share, sessions=sessions, served_tokens=served, remaining_tokens=remaining,
                       recent_drafted_tokens=observed.drafted, recent_accepted_tokens=observed.accepted,
                       recent_rejected_blocks=observed.rejected_blocks)
