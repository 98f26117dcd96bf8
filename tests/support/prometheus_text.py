"""Reading what ``/metrics`` serves (tests/runtime/test_metrics_names_and_values.py,
test_metrics_endpoint.py, test_wait_slo.py): a scrape, samples and families through
prometheus-client's own parser, a sample's value by its labels, a registry's export; and the one-service config and the decision
records the metric tests export."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.exporter import DaemonMetrics
from docktor.agent.runtime.metrics_http import MetricsServer

SERVICE = """
services:
  - name: w
    command: ['true']
    policy: rules
    queue: {kind: nats, url: 'nats://127.0.0.1:1', stream: S, consumer: C}
    rules:
      scale_up_when: [{metric: queue.backlog, op: ">", value: 500}]
      scale_down_when: [{metric: queue.backlog, op: "<=", value: 10}, {metric: queue.rate_in, op: "<", value: 1}]
"""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, Any]]:
    """Samples by (name, labels), and the families (type, help) by name, via prometheus-client's parser."""
    samples: Samples = {}
    families: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.status == 200
        return r.read().decode()


# --------------------------------------------------------------------------- names and values for known records


def record(**kw: Any) -> DecisionRecord:
    base: dict[str, Any] = dict(
        ts="2026-11-30T09:54:05.102Z", service="w", mode="autonomous", current_replicas=1, decision="hold",
        target_replicas=1, reason="r", source="rules", observations={"queue.backlog": 5.0, "queue.rate_in": 0.0},
        envelope={"lo": 1, "hi": 3, "lo_by": "min_replicas", "hi_by": "step_limit"}, id="a",
    )
    base.update(kw)
    return DecisionRecord(**base)


def exported(m: DaemonMetrics) -> tuple[Samples, dict[str, Any]]:
    server = MetricsServer("127.0.0.1", 0, m.registry).start()
    try:
        return parse(scrape(server.url))
    finally:
        server.close()
