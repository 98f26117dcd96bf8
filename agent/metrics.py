"""The metric vocabulary rules, policies and the LLM advisor speak.

Names are ``<group>.<name>``. Sources fill the ``queue.*`` group, executors the ``replicas.*``,
``cpu.*`` and ``mem.*`` groups, and :func:`derive` adds per-replica figures. A metric that could
not be read is absent from the observations, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping

QUEUE_METRICS: dict[str, str] = {
    "queue.pending": "messages not yet delivered to the consumer (JetStream num_pending)",
    "queue.ack_pending": "messages delivered but not yet acknowledged (in flight)",
    "queue.backlog": "pending + ack_pending: all work not yet done",
    "queue.redelivered": "messages delivered more than once and still unacknowledged",
    "queue.waiting": "pull requests waiting for messages (idle workers asking for work)",
    "queue.lag": "stream last sequence minus the consumer's delivered stream sequence",
    "queue.rate_in": "messages arriving per second (stream last sequence delta / time)",
    "queue.rate_out": "messages acknowledged per second (ack floor delta / time)",
}

SERVICE_METRICS: dict[str, str] = {
    "replicas.running": "replicas running now",
    "replicas.desired": "replicas the executor was last asked for",
    "replicas.failed": "replicas that exited, crashed or are restart-looping",
    "cpu.avg": "mean CPU percent over running replicas (100 = one core)",
    "cpu.max": "highest CPU percent of any running replica",
    "mem.avg_mb": "mean resident memory per running replica, MiB",
    "mem.max_mb": "highest resident memory of any running replica, MiB",
    "mem.avg_pct": "mean memory use as percent of the container limit, where one is set",
}

DERIVED_METRICS: dict[str, str] = {
    "queue.backlog_per_replica": "queue.backlog / replicas.running (KEDA/HPA AverageValue)",
    "queue.rate_out_per_replica": "queue.rate_out / replicas.running: measured per-replica throughput",
}

KNOWN_METRICS: dict[str, str] = {**QUEUE_METRICS, **SERVICE_METRICS, **DERIVED_METRICS}


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
