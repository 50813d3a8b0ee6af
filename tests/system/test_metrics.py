"""The edge's Prometheus /metrics: tandem_ names in base units, counting what the sessions did."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from device_client.generate import GenerationRequest, generate
from device_client.grpc_edge import EdgeConnection
from tandem.sampling import SamplingConfig


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
                                 if sample.labels else "")
            values[key] = sample.value
    return values


def test_metrics_count_sessions_tokens_and_bytes(llamacpp_edge, draft):
    before = scrape(llamacpp_edge.metrics_port)
    connection = EdgeConnection(llamacpp_edge.address)
    result, _ = generate(connection, draft, GenerationRequest("Hi!", "psd", 16, SamplingConfig(), ignore_eos=True))
    connection.close()
    after = scrape(llamacpp_edge.metrics_port)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("tandem_edge_sessions_opened_total{mode=speculative}") == 1
    assert delta("tandem_edge_drafted_tokens_total") == result.drafted_sent
    assert delta("tandem_edge_accepted_tokens_total") == result.accepted
    assert delta("tandem_edge_verify_seconds_count") == result.rounds
    assert delta("tandem_edge_received_bytes_total") == result.bytes_up
    assert delta("tandem_edge_sent_bytes_total") == result.bytes_down
    assert all(name.startswith("tandem_") or name.startswith(("python_", "process_")) for name in after)
