"""What KEDA is told from one decision record: the count in force after it, and whether the
workload is active (docktor.agent.keda.scaler)."""

from __future__ import annotations

from typing import Any

import pytest

from docktor.agent.keda.scaler import in_force, is_active, metric_name
from docktor.agent.runtime.decision_log import DecisionRecord, Outcome


def record(**fields: Any) -> DecisionRecord:
    base: dict[str, Any] = {
        "ts": "2026-12-07T06:00:00.000Z", "service": "worker", "mode": "autonomous", "current_replicas": 2,
        "decision": "scale_up", "target_replicas": 5, "reason": "backlog", "source": "policy",
    }
    return DecisionRecord(**{**base, **fields})


def ok(message: str = "5 served to KEDA") -> Outcome:
    return Outcome(status="ok", message=message, duration_ms=1.0)


@pytest.mark.parametrize(("fields", "count"), [
    ({"executed": True, "outcome": ok()}, 5),  # acted on: its target
    ({}, 2),  # advisory, paused, or the intent not written: the count it found
    ({"mode": "advisory"}, 2),
    ({"executed": True, "outcome": Outcome(status="error", message="not kept", duration_ms=1.0)}, 2),
    ({"decision": "hold", "target_replicas": 2}, 2),
    ({"decision": "hold", "current_replicas": None, "target_replicas": None, "source": "none"}, None),
])
def test_the_count_in_force(fields: dict[str, Any], count: int | None) -> None:
    assert in_force(record(**fields)) == count


@pytest.mark.parametrize(("observations", "count", "active"), [
    ({"queue.backlog": 0.0, "queue.rate_in": 3.0}, 0, False),  # idle, and Docktor wants none
    ({"queue.backlog": 4.0}, 0, True),  # work waiting
    ({"orders.queue.ack_pending": 1.0}, 0, True),  # in flight, on a further source (its metrics are prefixed)
    ({"queue.lag": 2.0}, 0, True),
    ({}, 1, True),  # min_replicas above 0: always active
    ({"queue.backlog_age": 9.0}, 0, False),  # not a count of work
])
def test_activity(observations: dict[str, float], count: int, active: bool) -> None:
    rec = record(decision="hold", current_replicas=count, target_replicas=count, observations=observations)
    assert is_active(rec) is active


def test_the_metric_is_named_after_the_service() -> None:
    assert metric_name("worker") == "docktor-worker"
