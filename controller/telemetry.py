"""The controller's picture of the system: newest SINR/spectral efficiency per pair, device reports, edge health.

Telemetry arrives from three sides (the link emulator's measurement stream, the devices' reports, the edges' load
probes); every slot ``observation`` turns the newest of each into the policy's input.  Device reports are
validated here: a report that is not finite, out of range or from an unknown user is refused and changes nothing;
an accepted one is believed only as far as the edges' own observations allow (controller/trust.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.config import ControllerConfig
from controller.estimator import EdgeState, UserState
from controller.policies.base import Observation
from controller.trust import Believed, DeviceReport, ObservedUser, believe

__all__ = ["DeviceReport", "EdgeHealth", "EdgeLoadSample", "Telemetry"]


@dataclass(frozen=True)
class EdgeLoadSample:
    sessions: int
    queue_depth: int
    verify_seconds: float
    shares_version: int
    draining: bool = False  # the edge is shutting down: it leaves the topology now, before it goes
    users: dict[int, ObservedUser] = field(default_factory=dict)  # what the edge observed of each user


@dataclass
class EdgeHealth:
    healthy: bool = True
    failing_since: float | None = None  # monotonic time of the first failed probe in a row
    load: EdgeLoadSample | None = None


@dataclass
class Telemetry:
    config: ControllerConfig
    reports: dict[int, DeviceReport] = field(default_factory=dict)
    spectral_efficiency: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)  # (up, down)
    trace_slot: int | None = None  # the slot the link emulator plays (None: no emulator report yet)
    edges: dict[int, EdgeHealth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.edges = {edge.id: EdgeHealth() for edge in self.config.edges}
        self._users = {user.id for user in self.config.users}

    def record_report(self, user: int, report: DeviceReport) -> None:
        """ValueError naming the first problem; nothing is recorded then."""
        if user not in self._users:
            raise ValueError(f"user {user} is not in the topology")
        if not (math.isfinite(report.draft_seconds_per_token) and 0 <= report.draft_seconds_per_token <= 60):
            raise ValueError(f"draft_seconds_per_token must be finite, in [0, 60], "
                             f"got {report.draft_seconds_per_token}")
        if not (math.isfinite(report.acceptance) and 0 <= report.acceptance <= 1):
            raise ValueError(f"acceptance must be finite, in [0, 1], got {report.acceptance}")
        if not (math.isfinite(report.round_seconds) and 0 <= report.round_seconds <= 3600):
            raise ValueError(f"round_seconds must be finite, in [0, 3600], got {report.round_seconds}")
        self.reports[user] = report

    def record_measurements(self, slot: int, pairs: list[tuple[int, int, float, float]]) -> None:
        """``pairs``: (user, edge, se_up, se_down); values that are not finite and non-negative count as outage."""
        for user, edge, up, down in pairs:
            self.spectral_efficiency[user, edge] = (_clean(up), _clean(down))
        self.trace_slot = slot

    def probe_result(self, edge: int, load: EdgeLoadSample | None, now: float | None = None) -> bool:
        """Record a load probe (None: it failed); returns whether the edge's health changed."""
        now = time.monotonic() if now is None else now
        health = self.edges[edge]
        was = health.healthy
        if load is not None and not load.draining:
            health.load, health.failing_since, health.healthy = load, None, True
        elif load is not None:
            health.load, health.failing_since, health.healthy = load, health.failing_since or now, False
        else:
            health.failing_since = health.failing_since if health.failing_since is not None else now
            # An edge that said it was draining and now fails its probe is gone: it does not come back meanwhile.
            drained = health.load is not None and health.load.draining
            health.healthy = not drained and now - health.failing_since < self.config.failover_after_s
        return was != health.healthy

    def healthy_edges(self) -> list[int]:
        return [edge.id for edge in self.config.edges if self.edges[edge.id].healthy]

    def busy_users(self) -> set[int]:
        """Users an edge reported with an open session at its last answered probe (what devices cannot fake)."""
        return {user for health in self.edges.values() if health.load is not None
                for user, observed in health.load.users.items() if observed.sessions}

    def believed(self, user: int, draft_length: int = 1) -> Believed:
        """The user's newest report, bounded by what the edges that answered their last probe observed of it
        (their acceptance counts read for blocks of ``draft_length`` tokens)."""
        observed = [health.load.users[user] for health in self.edges.values()
                    if health.load is not None and user in health.load.users]
        return believe(self.reports.get(user), observed, self.config.assume, draft_length)

    def observation(self, slot: int, drafting: Mapping[int, int] | None = None) -> Observation:
        """Every user over the healthy edges (ValueError when no edge is healthy); ``drafting``: each user's draft
        length in the decision in force (what the observed acceptance was counted over; default its topology's)."""
        edges = [self.config.edge(e) for e in self.healthy_edges()]
        if not edges:
            raise ValueError("no edge is healthy")
        static = (self.config.assume.spectral_efficiency,) * 2
        busy = self.busy_users()
        users = []
        for spec in self.config.users:
            figures = self.believed(spec.id, (drafting or {}).get(spec.id, spec.draft_length))
            se = [self.spectral_efficiency.get((spec.id, e.id), static) for e in edges]
            users.append(UserState(
                user=spec.id, se_up=tuple(s[0] for s in se), se_down=tuple(s[1] for s in se),
                draft_s_per_token=figures.draft_seconds_per_token, acceptance=figures.acceptance,
                draft_length=spec.draft_length, max_draft_length=spec.max_draft_length,
                # A user without an open session holds nothing on an edge: it is idle (0 pending), whatever it says.
                pending_tokens=figures.pending_tokens if spec.id in busy else 0, rtt_s=spec.rtt_s))
        return Observation(slot, tuple(EdgeState(e.id, e.bandwidth_hz, self.config.edge_timing(e), e.capacity)
                                       for e in edges), tuple(users))


def _clean(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0
