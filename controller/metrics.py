"""Prometheus metrics of the controller (``tandem_controller_`` prefix, base units)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DECISION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decision_seconds = Histogram("tandem_controller_decision_seconds", "Policy time per slot",
                                          buckets=DECISION_BUCKETS, registry=r)
        self.version = Gauge("tandem_controller_decision_version", "Version of the latest decision", registry=r)
        self.policy = Gauge("tandem_controller_policy_active", "1 for the active policy", ["policy"], registry=r)
        self.assignment = Gauge("tandem_controller_assignment", "1 for each user's edge", ["user", "edge"],
                                registry=r)
        self.bandwidth_share = Gauge("tandem_controller_bandwidth_share", "Bandwidth share by user", ["user"],
                                     registry=r)
        self.compute_share = Gauge("tandem_controller_compute_share", "Compute share by user", ["user"], registry=r)
        self.migrations = Counter("tandem_controller_migrations_total", "Users moved to another edge by a decision",
                                  registry=r)
        self.failovers = Counter("tandem_controller_failovers_total", "Users moved off an edge that failed",
                                 registry=r)
        self.edge_healthy = Gauge("tandem_controller_edge_healthy", "1 while an edge answers its probes", ["edge"],
                                  registry=r)
        self.estimated_latency = Gauge("tandem_controller_estimated_latency_seconds",
                                       "Estimated remaining latency of each user's request", ["user"], registry=r)
        self.estimated_round = Gauge("tandem_controller_estimated_round_seconds",
                                     "Estimated round time of each user (latency model)", ["user"], registry=r)
        self.observed_round = Gauge("tandem_controller_observed_round_seconds",
                                    "Round time each device reported", ["user"], registry=r)
        self.decision_errors = Counter("tandem_controller_decision_errors_total",
                                       "Slots without a new decision", ["reason"], registry=r)
        self.push_errors = Counter("tandem_controller_push_errors_total", "Decisions a component refused or missed",
                                   ["target"], registry=r)
        self.rejected = Counter("tandem_controller_rejected_total", "Requests refused", ["code"], registry=r)
