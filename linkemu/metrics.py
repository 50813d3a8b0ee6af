"""Prometheus metrics of the link emulator (`tandem_linkemu_*`), one registry per emulator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from linkemu.proxy import LinkObserver
from linkemu.shaper import Direction

# Shaping delays from sub-millisecond to a long outage.
DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class LinkEmuMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.bytes = Counter("tandem_linkemu_bytes", "Bytes delivered through the emulated link",
                             ["user", "direction"], registry=self.registry)
        self.rate = Gauge("tandem_linkemu_rate_bps", "Current rate of the emulated link (bit/s)",
                          ["user", "direction"], registry=self.registry)
        self.shaping_delay = Histogram(
            "tandem_linkemu_queueing_delay_seconds",
            "Time a chunk spent queued and serialised in the emulated link (excludes the base delay)",
            ["user", "direction"], buckets=DELAY_BUCKETS, registry=self.registry)
        self.link_down = Counter("tandem_linkemu_link_down", "Connections broken by an outage over the limit",
                                 ["user"], registry=self.registry)
        self.connections_refused = Counter("tandem_linkemu_connections_refused", "Connections closed at once: the "
                                           "user's port already carried its maximum", ["user"], registry=self.registry)
        self.sinr = Gauge("tandem_linkemu_sinr_db", "Current SINR of each user-edge pair (measurement report)",
                          ["user", "edge", "direction"], registry=self.registry)
        self.slot = Gauge("tandem_linkemu_trace_slot", "Trace slot being played", registry=self.registry)
        self.share = Gauge("tandem_linkemu_share", "Bandwidth share assigned to the user", ["user", "edge"],
                           registry=self.registry)

    def observer(self, user: int) -> LinkObserver:
        return _UserObserver(self, str(user))


class _UserObserver(LinkObserver):
    def __init__(self, metrics: LinkEmuMetrics, user: str) -> None:
        self.metrics, self.user = metrics, user

    def delivered(self, direction: Direction, nbytes: int, shaping_delay_s: float) -> None:
        self.metrics.bytes.labels(self.user, direction.value).inc(nbytes)
        self.metrics.shaping_delay.labels(self.user, direction.value).observe(shaping_delay_s)

    def link_down(self) -> None:
        self.metrics.link_down.labels(self.user).inc()

    def connection_refused(self) -> None:
        self.metrics.connections_refused.labels(self.user).inc()
