"""Prometheus metrics of a device fleet (``tandem_device_`` prefix; times are emulated seconds under pacing)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

EFFICIENCY_BUCKETS = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


class DeviceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("tandem_device_requests_total", "Requests ended, by user and outcome",
                                ["user", "outcome"], registry=r)
        self.latency = Histogram("tandem_device_request_latency_seconds", "Arrival to last token (emulated s)",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tandem_device_ttft_seconds", "Arrival to first token (emulated s)",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.last_latency = Gauge("tandem_device_last_latency_seconds", "The user's latest request latency",
                                  ["user"], registry=r)
        self.last_tokens_per_s = Gauge("tandem_device_last_tokens_per_second", "The user's latest request's "
                                       "tokens per emulated second", ["user"], registry=r)
        self.generated = Counter("tandem_device_generated_tokens_total", "Tokens committed", ["user"], registry=r)
        self.drafted = Counter("tandem_device_drafted_tokens_total", "Draft tokens sent for verification",
                               registry=r)
        self.accepted = Counter("tandem_device_accepted_tokens_total", "Draft tokens accepted", registry=r)
        self.migrations = Counter("tandem_device_migrations_total", "Requests moved between edges", registry=r)
        self.energy = Counter("tandem_device_energy_joules_total", "Drafting energy estimate from the profile",
                              registry=r)
        self.busy = Gauge("tandem_device_busy_users", "Users with a request being decoded", registry=r)
        self.pacing_steps = Counter("tandem_device_pacing_steps_total", "Draft steps held for the emulated "
                                    "phone's time (hardware pacing)", registry=r)
        self.pacing_overruns = Counter("tandem_device_pacing_overruns_total", "Paced draft steps whose real "
                                       "compute took longer than their dilated budget", registry=r)

        self.efficiency = Histogram("tandem_device_efficiency", "A speculative request's bound on its time (the "
                                    "hardware's and the link's: device_client/efficiency.py) over its time",
                                    buckets=EFFICIENCY_BUCKETS, registry=r)
        self.round_time = Counter("tandem_device_round_seconds_total", "Speculative requests' time by part: draft, "
                                  "link (up + down), queue, verify, late (the verdict waited for a draft step), "
                                  "other (emulated s)", ["part"], registry=r)

    def count_rounds(self, efficiency: float | None, parts: dict[str, float] | None) -> None:
        if efficiency is not None:
            self.efficiency.observe(efficiency)
        for part, seconds in (parts or {}).items():
            self.round_time.labels(part).inc(seconds)

    def count_paced_step(self, overran: bool) -> None:
        self.pacing_steps.inc()
        if overran:
            self.pacing_overruns.inc()
