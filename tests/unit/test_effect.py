"""Effectiveness records (agent/core/effect.py): each executed action judged a few checks later,
predicted vs observed, carried by the decision, the decision log and ``docktor explain``."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import effect
from docktor.agent.core.decide import decide, remember
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.prose import explain_one


def expectation(current: int = 2, target: int = 4, mu: float | None = 50.0) -> effect.Expectation:
    return effect.Expectation(at=100.0, due_at=130.0, action="scale_up" if target > current else "scale_down",
                              current=current, target=target, pending=1000.0, oldest_age=12.0, mu=mu, startup=10.0)


def after(pending: float, age: float, rate_in: float = 150.0) -> list[tuple[float, Mapping[str, float]]]:
    """Ticks every 10 s for 30 s after the action, the queue read ``pending`` at the last one."""
    return [(100.0 + 10 * k, {"queue.rate_in": rate_in, "queue.pending": pending, "queue.oldest_age": age})
            for k in range(1, 4)]


def test_a_scale_up_that_did_what_it_should_reads_as_predicted() -> None:
    # 2 replicas for 30 s and 2 more for the 20 s after their start-up, at 50/s: 5,000 served;
    # 1,000 queued + 4,500 arrived - 5,000 = 500 left, which a 150/s queue holds for ~3.3 s
    rec = effect.judge(expectation(), after(pending=500.0, age=3.0))
    assert rec == {
        "action": "scale_up", "from": 2, "to": 4, "after_s": 30.0,
        "pending_before": 1000.0, "pending_observed": 500.0, "pending_predicted": 500.0,
        "drain_observed": 16.67, "drain_predicted": 16.67,
        "age_before": 12.0, "age_observed": 3.0, "age_predicted": 3.3, "verdict": "as_predicted",
    }
    assert effect.text(rec) == ("scale_up 2 -> 4, 30 s on: queue 1,000 -> 500 (predicted 500), net drain +16.67/s "
                                "(predicted +16.67/s); oldest message 3 s (predicted ~3 s): as predicted")


def test_a_scale_up_that_fell_short_says_so() -> None:
    rec = effect.judge(expectation(), after(pending=3000.0, age=20.0))
    assert rec["verdict"] == "short"
    assert "short of the prediction" in effect.text(rec)


def test_within_a_tenth_of_the_service_predicted_is_as_predicted() -> None:
    # 5,000 predicted served: up to ~500 more left is measurement, not a miss
    assert effect.judge(expectation(), after(pending=950.0, age=6.0))["verdict"] == "as_predicted"


def test_a_scale_down_counts_only_the_replicas_kept() -> None:
    rec = effect.judge(expectation(current=4, target=2), after(pending=500.0, age=3.0, rate_in=100.0))
    # 2 x 50/s x 30 s = 3,000 served of 1,000 + 3,000
    assert rec["pending_predicted"] == 1000.0 and rec["verdict"] == "as_predicted"


def test_without_a_measured_throughput_only_what_was_observed() -> None:
    rec = effect.judge(expectation(mu=None), after(pending=500.0, age=3.0))
    assert rec["verdict"] == "unknown" and rec["pending_predicted"] is None and rec["pending_observed"] == 500.0


def svc() -> ServiceConfig:
    return ServiceConfig(name="w", check_interval=5.0, startup_delay=10.0, max_replicas=20, processing_time=0.02)


BUSY = {"queue.backlog": 5000.0, "queue.pending": 4998.0, "queue.ack_pending": 2.0, "queue.rate_in": 400.0,
        "queue.rate_out": 100.0, "queue.oldest_age": 12.0}


@pytest.mark.parametrize(("acted", "ok", "judged"), [(True, True, 1), (True, False, 0), (False, True, 0)])
def test_only_an_executed_action_is_judged_a_few_checks_later(acted: bool, ok: bool, judged: int) -> None:
    state = ServiceState()
    first = decide(svc(), BUSY, 2, state, now=0.0)
    assert first.changes and first.expecting is not None
    remember(state, first, 0.0, acted=acted, ok=ok, observations=first.observations)
    current = first.target if acted and ok else 2
    effects = []
    for k in range(1, 6):  # 5 s checks: due 10 s + 2 checks = 20 s after
        d = decide(svc(), BUSY, current, state, now=5.0 * k)
        effects += [(5.0 * k, e) for e in d.effects]
        remember(state, d, 5.0 * k, acted=False, observations=d.observations)
    assert [t for t, _ in effects] == [20.0] * judged
    assert state.expectations == []


def test_the_decision_log_and_explain_carry_the_record() -> None:
    state = ServiceState()
    first = decide(svc(), BUSY, 2, state, now=0.0)
    remember(state, first, 0.0, acted=True, ok=True, observations=first.observations)
    d = first
    for k in range(1, 5):
        d = decide(svc(), BUSY, first.target, state, now=5.0 * k)
        remember(state, d, 5.0 * k, acted=False, observations=d.observations)
    assert len(d.effects) == 1
    line = json.loads(DecisionRecord.from_decision(d, mode="autonomous", ts=0.0).line())
    assert line["effects"][0]["from"] == 2 and line["effects"][0]["to"] == first.target
    assert any(row.startswith("  effect     scale_up 2 -> ") for row in explain_one(line))
    quiet = json.loads(DecisionRecord.from_decision(first, mode="autonomous", ts=0.0).line())
    assert "effects" not in quiet
