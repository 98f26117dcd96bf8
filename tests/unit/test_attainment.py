"""The attainment estimator (agent/core/attainment.py) against queues whose truth is known exactly.

A small FIFO queue is played message by message: arrivals at given rates, workers taking each
message for a fixed service time, every message's arrival and start time known. Each tick reads
what a source would: the age of the next message to start (0 when none waits) and the
completions per second since the previous tick. The truth is the share of the messages started
in the window whose wait (start - arrival) is within the target; the estimate must agree within
the error docs/policy.md states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from docktor.agent.core.attainment import AttainmentWindow, late_share

STEP = 0.005  # the queue's own clock step, s


@dataclass
class Played:
    starts: list[tuple[float, float]]  # (arrival, start) per started message
    ticks: list[tuple[float, dict[str, float]]]  # what each tick read


def play(rate_in: Callable[[float], float], capacity: Callable[[float], float], *, until: float, tick: float,
         service_s: float = 0.02, backlog_at_0: int = 0, backlog_age: float = 0.0) -> Played:
    """The queue from 0 to ``until``: ``rate_in(t)`` arrivals/s, ``capacity(t)`` starts/s while
    messages wait (workers x 1/service time); ``backlog_at_0`` messages already waiting, arrived
    evenly over the ``backlog_age`` seconds before 0."""
    waiting: list[float] = [-backlog_age + backlog_age * i / max(1, backlog_at_0) for i in range(backlog_at_0)]
    head = 0
    due_in = due_out = 0.0
    starts: list[tuple[float, float]] = []
    finishes: list[float] = []
    ticks: list[tuple[float, dict[str, float]]] = []
    next_tick, done_before, arrived_before = tick, 0, backlog_at_0
    n = int(round(until / STEP))
    for i in range(1, n + 1):
        t = i * STEP
        due_in += rate_in(t) * STEP
        while due_in >= 1:
            waiting.append(t - (due_in - 1) / max(rate_in(t), 1e-9))  # evenly inside the step
            due_in -= 1
        due_out = min(due_out + capacity(t) * STEP, float(len(waiting) - head))
        while due_out >= 1 and head < len(waiting):
            starts.append((waiting[head], t))
            finishes.append(t + service_s)
            head += 1
            due_out -= 1
        if t >= next_tick - 1e-9:
            done = sum(1 for f in finishes if f <= t)
            age = t - waiting[head] if head < len(waiting) else 0.0
            ticks.append((t, {"queue.oldest_age": age, "queue.rate_out": (done - done_before) / tick,
                              "queue.rate_in": (len(waiting) - arrived_before) / tick,
                              "queue.backlog": float(len(waiting) - head)}))
            next_tick, done_before, arrived_before = next_tick + tick, done, len(waiting)
    return Played(starts, ticks)


def truth(p: Played, now: float, window: float, target: float) -> float:
    waits = [s - a for a, s in p.starts if now - window < s <= now]
    return sum(1 for w in waits if w <= target) / len(waits)


def estimate(p: Played, target: float, *, skip: Callable[[int], bool] = lambda i: False) -> AttainmentWindow:
    est = AttainmentWindow(target, max_gap=30.0)
    for i, (t, obs) in enumerate(p.ticks):
        est.observe(t, {} if skip(i) else obs)
    return est


def crossing_share(p: Played, now: float, window: float, target: float) -> float:
    """The share of the window's starts made in tick intervals where the age crossed the target:
    the bound the docs give for the estimate's error."""
    crossing = 0
    for (t0, o0), (t1, o1) in zip(p.ticks, p.ticks[1:], strict=False):
        if (o0["queue.oldest_age"] > target) != (o1["queue.oldest_age"] > target):
            crossing += sum(1 for _, s in p.starts if t0 < s <= t1 and now - window < s <= now)
    return crossing / sum(1 for _, s in p.starts if now - window < s <= now)


def steady(rate: float) -> Callable[[float], float]:
    return lambda t: rate


def burst(base: float, peak: float, start: float, length: float) -> Callable[[float], float]:
    return lambda t: peak if start <= t < start + length else base


# --------------------------------------------------------------------------- exact cases


def test_a_queue_that_keeps_up_is_at_100_percent_exactly() -> None:
    p = play(steady(50), steady(60), until=400, tick=5)
    est = estimate(p, target=15)
    summary = est.summary(400)
    assert truth(p, 400, 300, 15) == 1.0
    assert summary["attainment_5m"] == 1.0 and summary["attainment_60m"] == 1.0
    # every start counted: 50/s over the 300 s window, within the messages in flight at its edges
    assert summary["started_5m"] == pytest.approx(50 * 300, abs=50)
    assert "why" not in summary


def test_a_standing_wait_beyond_the_target_is_at_0_percent_exactly() -> None:
    # 1000 messages 20 s deep, arrivals and starts both at 50/s: every message waits 20 s
    p = play(steady(50), steady(50), until=400, tick=5, backlog_at_0=1000, backlog_age=20)
    assert {round(s - a, 1) for a, s in p.starts[100:]} == {20.0}
    assert truth(p, 400, 300, 15) == 0.0
    assert estimate(p, target=15).summary(400)["attainment_5m"] == 0.0
    # ... and a target above the wait makes all of them on time
    assert estimate(p, target=25).summary(400)["attainment_5m"] == 1.0


# --------------------------------------------------------------------------- bursts: the error bound


@pytest.mark.parametrize("tick", [1.0, 2.0, 5.0])
def test_a_burst_that_makes_some_late_is_estimated_within_the_crossing_bound(tick: float) -> None:
    # base 80/s on 100/s of capacity; a 20 s burst of 300/s builds 4000 messages that drain at
    # 20/s: waits climb far past 15 s, then come back down
    p = play(burst(80, 300, 100, 20), steady(100), until=520, tick=tick)
    now = 520
    for window, key in ((300, "attainment_5m"), (3600, "attainment_60m")):
        real = truth(p, now, window, 15)
        assert 0.2 < real < 0.95  # the case is not trivial: a real share is late
        got = estimate(p, target=15).summary(now)[key]
        bound = crossing_share(p, now, window, 15)
        assert abs(got - real) <= bound, (tick, window, got, real, bound)
        # the documented figure: within 1 percentage point at ticks up to 5 s
        assert abs(got - real) <= 0.01, (tick, window, got, real)


def lagging_bursts() -> tuple[Callable[[float], float], Callable[[float], float]]:
    """450/s for 15 s every minute over 80/s; capacity 100/s, and 500/s from 10 s into each burst
    (a scale-up's start-up) for 30 s: each burst's first messages wait."""
    return (lambda t: 450 if t % 60 < 15 and t >= 60 else 80,
            lambda t: 500 if 10 <= t % 60 < 40 and t >= 60 else 100)


@pytest.mark.parametrize("tick", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("target", [2.0, 5.0])
def test_bursts_met_late_by_capacity_are_estimated_within_one_point(tick: float, target: float) -> None:
    p = play(*lagging_bursts(), until=420, tick=tick)
    real = truth(p, 420, 300, target)
    got = estimate(p, target=target).summary(420)["attainment_5m"]
    assert 0.2 < real < 0.6
    assert abs(got - real) <= 0.01, (got, real)


def test_without_arrival_rates_the_straight_line_stays_within_the_crossing_bound() -> None:
    # a source without queue.rate_in: the age's straight line between ticks, coarser
    p = play(*lagging_bursts(), until=420, tick=5)
    for target in (2.0, 5.0):
        est = AttainmentWindow(target, max_gap=30)
        for t, obs in p.ticks:
            est.observe(t, {k: v for k, v in obs.items() if k != "queue.rate_in"})
        got, real = est.summary(420)["attainment_5m"], truth(p, 420, 300, target)
        assert abs(got - real) <= crossing_share(p, 420, 300, target), (target, got, real)


# --------------------------------------------------------------------------- gaps and absence


def test_missing_samples_are_gaps_never_zeros() -> None:
    p = play(steady(50), steady(60), until=400, tick=5)
    est = estimate(p, target=15, skip=lambda i: i % 4 == 1)  # every fourth tick read nothing
    s = est.share(400, 300)
    assert s.value == 1.0
    # a missing tick costs the intervals on both of its sides, and nothing else
    assert s.measured_s == pytest.approx(300 / 2, abs=10)
    assert s.started == pytest.approx(50 * s.measured_s, rel=0.02)


def test_a_rate_without_an_age_counts_nothing() -> None:
    est = AttainmentWindow(15, max_gap=30)
    for t in range(0, 100, 5):
        est.observe(float(t), {"queue.rate_out": 50.0})
    summary = est.summary(100)
    assert summary["attainment_5m"] is None and summary["attainment_60m"] is None
    assert summary["why"] == "5m: no samples yet; 60m: no samples yet"


def test_an_interval_longer_than_max_gap_is_not_counted() -> None:
    est = AttainmentWindow(15, max_gap=12)
    est.observe(0, {"queue.oldest_age": 30.0, "queue.rate_out": 10.0})
    est.observe(60, {"queue.oldest_age": 30.0, "queue.rate_out": 10.0})  # a minute without a tick
    est.observe(65, {"queue.oldest_age": 0.0, "queue.rate_out": 10.0})
    s = est.share(65, 300)
    assert s.measured_s == 5 and s.started == 50
    assert s.value == pytest.approx(0.5)  # 30 -> 0 crosses 15 halfway


def test_an_idle_window_has_no_attainment_and_says_why() -> None:
    est = AttainmentWindow(15, max_gap=30)
    for t in range(0, 400, 5):
        est.observe(float(t), {"queue.oldest_age": 0.0, "queue.rate_out": 0.0 if t > 30 else 5.0})
    summary = est.summary(395)
    assert summary["attainment_5m"] is None and summary["attainment_60m"] == 1.0
    assert summary["why"] == "5m: no message started in this window"


def test_late_share_places_the_crossing_on_the_straight_line() -> None:
    assert late_share(0, 10, 15) == 0 and late_share(20, 30, 15) == 1
    assert late_share(10, 20, 15) == pytest.approx(0.5)
    assert late_share(20, 10, 15) == pytest.approx(0.5)
    assert late_share(15, 15, 15) == 0  # exactly the target is on time


# --------------------------------------------------------------------------- the state file


def test_dump_and_load_keep_the_windows_figures() -> None:
    p = play(burst(80, 300, 100, 20), steady(100), until=520, tick=2)
    est = estimate(p, target=15)
    doc = est.dump(to_wall=1_000_000.0)
    assert len(doc["spans"]) <= 520 / 60 + 2  # merged into minutes
    back = AttainmentWindow(15, max_gap=30)
    assert back.load(doc, to_mono=-1_000_000.0, now=520) == len(doc["spans"])
    for window in (300, 3600):
        a, b = est.share(520, window), back.share(520, window)
        assert b.value is not None and a.value is not None
        # whole minutes are merged: only the minute the window's edge cuts is counted in proportion
        assert abs(a.value - b.value) < 0.02 and math.isclose(a.started, b.started, rel_tol=0.05)
    with pytest.raises(ValueError, match="target_wait changed"):
        AttainmentWindow(10, max_gap=30).load(doc, to_mono=0, now=520)
    with pytest.raises(ValueError, match="is not a span"):
        AttainmentWindow(15, max_gap=30).load({"target_wait_s": 15, "spans": [[1, -1, 0, 0]]}, to_mono=0, now=520)

