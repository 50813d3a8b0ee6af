"""Prometheus metrics of an edge server (``tandem_edge_`` prefix, base units)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge_server.labels import UserLabels

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.user_label = UserLabels()  # users come from requests: at most 256 labels, then "other"
        self.sessions_active = Gauge("tandem_edge_sessions_active", "Sessions held by the edge", registry=r)
        self.sessions_opened = Counter(
            "tandem_edge_sessions_opened_total", "Sessions opened", ["mode"], registry=r
        )
        self.verify_seconds = Histogram(
            "tandem_edge_verify_seconds", "Block arrival to verdict", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "tandem_edge_queue_seconds", "Block waiting for the engine", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("tandem_edge_queue_depth", "Blocks waiting for the engine", registry=r)
        self.batch_size = Histogram(
            "tandem_edge_batch_blocks", "Blocks scored in one engine call", buckets=(1, 2, 3, 4, 6, 8, 16, 32),
            registry=r,
        )
        self.accepted_length = Histogram(
            "tandem_edge_accepted_length", "Draft tokens accepted per block", buckets=tuple(range(0, 17)),
            registry=r,
        )
        self.drafted_tokens = Counter("tandem_edge_drafted_tokens_total", "Draft tokens received", registry=r)
        self.accepted_tokens = Counter("tandem_edge_accepted_tokens_total", "Draft tokens accepted", registry=r)
        self.emitted_tokens = Counter(
            "tandem_edge_emitted_tokens_total", "Tokens committed to sessions", ["mode"], registry=r
        )
        self.bytes_received = Counter(
            "tandem_edge_received_bytes_total", "Protobuf payload bytes from devices", registry=r
        )
        self.bytes_sent = Counter("tandem_edge_sent_bytes_total", "Protobuf payload bytes to devices", registry=r)
        self.served_tokens = Counter(
            "tandem_edge_served_tokens_total", "Target work done, in tokens, by the user who paid for it", ["user"],
            registry=r)
        self.reread_tokens = Counter(
            "tandem_edge_reread_tokens_total", "Prefix tokens the engine re-read beyond what blocks paid for (a "
            "context evicted from its cache), charged to the flows that caused them", registry=r)
        self.best_effort_jobs = Counter(
            "tandem_edge_best_effort_jobs_total", "Jobs of users without a compute share on this edge", registry=r)
        self.compute_share = Gauge("tandem_edge_compute_share", "Compute share in force by user", ["user"], registry=r)
        self.shares_version = Gauge("tandem_edge_shares_version", "Version of the compute shares in force",
                                    registry=r)
        self.pacing_steps = Counter("tandem_edge_pacing_steps_total", "Engine steps held for the emulated edge's "
                                    "time (hardware pacing)", registry=r)
        self.pacing_overruns = Counter("tandem_edge_pacing_overruns_total", "Paced steps whose real compute took "
                                       "longer than their dilated budget", registry=r)
        self.errors = Counter("tandem_edge_rejected_total", "Requests ended with an error status", ["code"], registry=r)

    def count_paced_step(self, overran: bool) -> None:
        self.pacing_steps.inc()
        if overran:
            self.pacing_overruns.inc()
