"""Read a daemon's Prometheus endpoint: the testbed's status, summaries and benches sum series from it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(host: str, port: int, timeout: float = 2.0) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of every sample, {} when the endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple[str, tuple], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def by_label(samples: dict[tuple[str, tuple], float], name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (sample, labels), value in samples.items()
            if sample == name and label in dict(labels)}
