"""The docktor sizing policy as a pure function: estimates, deadline sizing, floors, purity."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import sizing
from docktor.agent.core.decide import decide
from docktor.agent.core.rules import evaluate
from docktor.agent.core.state import ServiceState


def svc(**kw: object) -> ServiceConfig:
    base: dict[str, object] = dict(
        name="w", policy="docktor", min_replicas=1, max_replicas=50, check_interval=5,
        target_wait=30, startup_delay=10, scale_up_by=4, scale_up_percent=100, cooldown_up=0,
    )
    base.update(kw)
    return ServiceConfig(**base)  # type: ignore[arg-type]


def obs(backlog: float = 0, rate_in: float = 100, rate_out: float | None = None, running: float = 2, ack: float | None = None) -> dict[str, float]:
    in_flight = min(backlog, running) if ack is None else ack
    return {
        "queue.backlog": float(backlog),
        "queue.pending": float(backlog - in_flight),
        "queue.ack_pending": float(in_flight),
        "queue.rate_in": float(rate_in),
        "queue.rate_out": float(rate_in if rate_out is None else rate_out),
        "replicas.running": float(running),
    }


def history(points: list[tuple[float, dict[str, float]]]) -> ServiceState:
    state = ServiceState()
    for t, o in points:
        state.history.append((t, o))
    return state


def propose(config: ServiceConfig, o: dict[str, float], current: int, state: ServiceState, now: float) -> int:
    return sizing.docktor_policy(config, o, current, state, evaluate(config.rules, o), now).target


def test_steady_load_with_configured_processing_time_sizes_to_the_work() -> None:
    # 100 msg/s at 20 ms each is 2 replicas of work, nothing queued: exactly 2
    config = svc(processing_time=0.02)
    assert propose(config, obs(backlog=0, rate_in=100, running=2, ack=0), 2, ServiceState(), 100.0) == 2


def test_littles_law_measures_throughput_without_saturation() -> None:
    # 4 messages in flight while 100/s complete: each takes 40 ms, so one replica does 25/s
    state = history([(float(t), obs(backlog=4, rate_in=100, running=6, ack=4)) for t in range(0, 100, 5)])
    mu, source = sizing.estimate_mu(svc(), list(state.history))
    assert source == "littles_law"
    assert mu == pytest.approx(25.0)
    # so 100 msg/s needs 4 replicas, measured, not the configured guess
    assert propose(svc(processing_time=0.001), obs(backlog=4, rate_in=100, running=6, ack=4), 6, state, 100.0) == 4


def test_no_throughput_information_holds_rather_than_guessing() -> None:
    o = obs(backlog=0, rate_in=0, rate_out=0, running=3, ack=0)
    assert propose(svc(), o, 3, ServiceState(), 10.0) == 3


def test_backlog_is_drained_within_the_wait_budget_after_startup() -> None:
    config = svc(processing_time=0.02)  # 50/s per replica
    # 6000 queued, no arrivals, 2 ready replicas. The wait budget is 30*0.75 - 5 = 17.5 s. During
    # the 10 s start-up the 2 ready replicas serve 1000; the other 5000 need n replicas for 7.5 s.
    target = propose(config, obs(backlog=6000, rate_in=0, running=2), 2, ServiceState(), 50.0)
    assert sizing.wait_budget(config) == pytest.approx(17.5)
    assert target == math.ceil((6000 - 2 * 50 * 10) / (50 * 7.5))


def test_deadline_replicas_matches_the_closed_form() -> None:
    # no arrivals: n = (backlog - n_now*mu*lag) / (mu * (budget - lag)) at the first horizon past the budget
    n = sizing.deadline_replicas(backlog=1000, arrivals=[0.0] * 40, step=1.0, mu=10.0, n_now=1, lag=5.0, budget=10.0)
    assert n == pytest.approx((1000 - 1 * 10 * 5) / (10 * 5))


@settings(max_examples=60, deadline=None)
@given(
    backlog=st.integers(0, 50_000),
    extra=st.integers(1, 50_000),
    rate=st.floats(0, 2000),
    running=st.integers(0, 40),
)
def test_more_backlog_never_means_fewer_replicas(backlog: int, extra: int, rate: float, running: int) -> None:
    config = svc(processing_time=0.02)
    state = ServiceState()
    # Same messages in flight in both, so both measure the same throughput (Little's law reads
    # ack_pending); only the waiting queue differs.
    ack = min(backlog, running)
    a = propose(config, obs(backlog=backlog, rate_in=rate, running=running, ack=ack), running, state, 100.0)
    b = propose(config, obs(backlog=backlog + extra, rate_in=rate, running=running, ack=ack), running, state, 100.0)
    assert b >= a


def test_policy_is_pure() -> None:
    config = svc(processing_time=0.02)
    state = history([(float(t), obs(backlog=10 * t, rate_in=100 + t, running=3)) for t in range(0, 300, 5)])
    before = copy.deepcopy((list(state.history), list(state.recommendations), state.failures, state.backoff_until))
    o = obs(backlog=3000, rate_in=400, running=3)
    first = sizing.docktor_policy(config, o, 3, state, evaluate(config.rules, o), 300.0)
    second = sizing.docktor_policy(config, o, 3, state, evaluate(config.rules, o), 300.0)
    assert first == second
    assert (list(state.history), list(state.recommendations), state.failures, state.backoff_until) == before


def _bursty(period: float, t: float) -> float:
    return 600.0 if (t % period) < 10 else 100.0


def test_periodic_history_is_detected_and_a_ramp_is_not() -> None:
    import numpy as np

    times = np.arange(0, 600, 5.0)
    bursts = np.array([_bursty(60, t) for t in times])
    period = sizing.detect_period(times, bursts)
    assert period is not None and abs(period - 60) <= 5
    assert sizing.detect_period(times, 0.5 * times) is None


def test_prediction_only_raises_the_target() -> None:
    config = svc(processing_time=0.02)
    # A burst recurs every 60 s; now is just before the next one and the queue is quiet.
    pts = [(t, obs(backlog=5, rate_in=_bursty(60, t - 5), running=4, ack=2)) for t in [float(x) for x in range(0, 600, 5)]]
    now = 600.0 - 10.0  # the next burst starts at 600
    state = history([p for p in pts if p[0] < now])
    o = obs(backlog=5, rate_in=100, running=4, ack=2)
    with_prediction = propose(config, o, 4, state, now)
    without = propose(config, o, 4, history([p for p in pts if p[0] >= now - 60]), now)  # too short to see a period
    assert sizing.estimate(config, o, state, now).period is not None
    assert with_prediction >= without


def test_missing_rate_holds_through_the_decision_path() -> None:
    config = svc(processing_time=0.02)
    o = obs(backlog=0, rate_in=0, running=8)
    del o["queue.rate_in"]
    d = decide(config, o, 8, ServiceState(), 100.0)
    assert d.target == 8 and "queue.rate_in" in d.missing


def test_scale_up_is_bounded_by_the_step_guardrail() -> None:
    config = svc(processing_time=0.02, scale_up_by=2, scale_up_percent=None)
    d = decide(config, obs(backlog=50_000, rate_in=800, running=2), 2, ServiceState(), 100.0)
    assert d.proposal > 4 and d.target == 4
    assert any(n.name == "step_limit" for n in d.guardrails)


def test_docktor_is_the_default_policy() -> None:
    assert ServiceConfig(name="w").policy == "docktor"


def test_prefetching_workers_are_measured_by_saturated_throughput() -> None:
    # Each of 4 replicas holds a prefetched batch of 10 (ack_pending 40) while a queue waits:
    # Little's law alone would read 200/40 = 5/s per replica; saturated ticks show 200/4 = 50/s.
    pts = [(float(t), obs(backlog=540, rate_in=200, rate_out=200, running=4, ack=40)) for t in range(0, 100, 5)]
    mu, source = sizing.estimate_mu(svc(), pts)
    assert source == "saturated" and mu == pytest.approx(50.0)


def _burst_history(now: float, scale_recent: float = 1.0) -> ServiceState:
    """Bursts of 600/s for 10 s every 60 s on 100/s, ticks every 5 s up to ``now`` (exclusive);
    the last 30 s multiplied by ``scale_recent``."""
    pts = []
    for t in [float(x) for x in range(0, int(now), 5)]:
        rate = _bursty(60, t - 5) * (scale_recent if t > now - 30 else 1.0)
        busy = rate / 50  # 50/s per replica, so Little's law reads 50/s
        pts.append((t, obs(backlog=busy + 1, rate_in=rate, running=max(4, math.ceil(busy)), ack=busy)))
    return history(pts)


def test_a_repeating_burst_is_forecast_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    config = svc(processing_time=0.02, prediction="forecast")
    now = 610.0  # the last tick of a 10 s burst that has recurred every 60 s for ten minutes
    state = _burst_history(now)
    o = obs(backlog=4000, rate_in=600, rate_out=200, running=4, ack=4)
    est = sizing.estimate(config, o, state, now)
    assert est.period is not None and est.period % 60 == pytest.approx(0, abs=5)  # 60 s or a multiple
    assert sizing.prediction_fits(state, o, now, est.period, 5.0, 30.0)
    trusted = sizing.docktor_policy(config, o, 4, state, evaluate(config.rules, o), now)
    assert "forecast from the load" in trusted.reason
    # The default, `prediction: floor`, never lets a prediction lower the target.
    floor = sizing.docktor_policy(svc(processing_time=0.02), o, 4, state, evaluate(config.rules, o), now)
    assert "forecast from the load" not in floor.reason and floor.target > trusted.target
    # With a tolerance no load can meet, the period is distrusted and the policy sizes for
    # today's rate persisting, which needs more replicas for this burst.
    monkeypatch.setattr(sizing, "FIT_TOLERANCE", -1.0)
    persisting = sizing.docktor_policy(config, o, 4, state, evaluate(config.rules, o), now)
    assert "forecast from the load" not in persisting.reason
    assert trusted.target < persisting.target
    # Trusting the forecast never ignores the queue: at least what the backlog alone needs.
    assert est.mu is not None
    backlog_only = sizing.deadline_replicas(4000, [0.0] * 30, 5.0, est.mu, 4, 10.0, sizing.wait_budget(config))
    assert backlog_only > 0 and trusted.target >= math.ceil(backlog_only)


def test_load_that_outgrew_its_period_is_not_forecast_from_it() -> None:
    config = svc(processing_time=0.02, prediction="forecast")
    now = 605.0
    state = _burst_history(now, scale_recent=3.0)  # the last 30 s brought three times the usual load
    o = obs(backlog=2500, rate_in=1800, rate_out=200, running=4, ack=4)
    assert sizing.estimate(config, o, state, now).period is not None
    period = sizing.estimate(config, o, state, now).period
    assert period is not None and not sizing.prediction_fits(state, o, now, period, 5.0, 30.0)
    p = sizing.docktor_policy(config, o, 4, state, evaluate(config.rules, o), now)
    assert "forecast from the load" not in p.reason
    est = sizing.estimate(config, o, state, now)
    assert p.target >= math.ceil(est.rate / est.mu)  # the queue must not grow at today's rate


def test_prediction_fits_needs_two_periods_of_history() -> None:
    state = _burst_history(100.0)
    assert not sizing.prediction_fits(state, obs(rate_in=100), 100.0, 60.0, 5.0, 30.0)
