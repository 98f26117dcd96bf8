"""The metric vocabulary rules, policies and the LLM advisor speak, and the per-replica figures.

Names are ``<group>.<name>``. The vocabulary is open: each source and executor plugin says what
it provides (:attr:`docktor.tools.sdk.Source.provides`), and the standard names of
:data:`docktor.tools.sdk.STANDARD_METRICS` carry the same meaning whichever plugin produces them.
A service's first source is its queue: its metrics keep their names. Every further source's
metrics are prefixed with that source's name (``latency.http.p99_seconds``). A metric that could
not be read is absent from the observations, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping

from docktor.tools.sdk import STANDARD_METRICS, MetricInfo

#: one read of the history: (when, its observations)
Point = tuple[float, Mapping[str, float]]


def time_of(point: Point) -> float:
    """A point's time: the key to bisect a history by (oldest first)."""
    return point[0]


def pending(o: Mapping[str, float]) -> float | None:
    """Messages waiting for a worker: ``queue.pending`` when the source says it, else the backlog
    less one in flight per running replica; None without either."""
    if "queue.pending" in o:
        return o["queue.pending"]
    if "queue.backlog" in o and "replicas.running" in o:
        return o["queue.backlog"] - o["replicas.running"]
    return None

#: the replica figures the daemon always has from the executor's status
REPLICA_METRICS: frozenset[str] = frozenset({"replicas.running", "replicas.desired", "replicas.failed"})

#: figures :func:`derive` adds, each with the metrics it is computed from
DERIVED_METRICS: Mapping[str, tuple[MetricInfo, tuple[str, ...]]] = {
    "queue.backlog_per_replica": (
        MetricInfo("messages", "queue.backlog / replicas.running (KEDA/HPA AverageValue)"),
        ("queue.backlog", "replicas.running"),
    ),
    "queue.rate_out_per_replica": (
        MetricInfo("messages_per_second", "queue.rate_out / replicas.running: measured per-replica throughput"),
        ("queue.rate_out", "replicas.running"),
    ),
    # set by decide.plan from the history (core/saturation.py), not by derive(): it needs past ticks
    "scaling.ineffective": (
        MetricInfo("ratio", "1 while the last scale-ups added no throughput (a downstream limit?), else 0"),
        ("queue.rate_out", "replicas.running"),
    ),
}


def derivable(available: set[str] | frozenset[str]) -> set[str]:
    """The derived metrics whose inputs are all in ``available``."""
    return {name for name, (_, inputs) in DERIVED_METRICS.items() if set(inputs) <= available}


def describe(name: str) -> MetricInfo | None:
    """What a standard or derived metric means; None for a plugin's own name."""
    if name in STANDARD_METRICS:
        return STANDARD_METRICS[name]
    if name in DERIVED_METRICS:
        return DERIVED_METRICS[name][0]
    return None


def derive(observations: Mapping[str, float]) -> dict[str, float]:
    """Return ``observations`` plus per-replica figures, where their inputs are present."""
    out = dict(observations)
    running = out.get("replicas.running")
    if running is not None and running > 0:
        if "queue.backlog" in out:
            out["queue.backlog_per_replica"] = out["queue.backlog"] / running
        if "queue.rate_out" in out:
            out["queue.rate_out_per_replica"] = out["queue.rate_out"] / running
    return out
