"""The deadline planner under the docktor policy: queue ages, capacity over time, fewest replicas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docktor.agent.core import deadlines as dl


def test_queued_messages_are_due_by_when_they_arrived() -> None:
    # 100/s for the last 20 s (ticks every 5 s), 1000 queued: the oldest arrived 10 s ago
    times = np.arange(80.0, 101.0, 5.0)
    at, due = dl.queue_deadlines(1000, times, np.full(times.size, 100.0), now=100.0, slo=30.0)
    assert at[0] == pytest.approx(20.0) and at[-1] == pytest.approx(30.0)
    assert float(np.interp(25.0, at, due)) == pytest.approx(500.0)  # half of them are due within 25 s
    assert due[-1] == pytest.approx(1000.0)


def test_messages_older_than_the_history_are_due_when_it_begins() -> None:
    times = np.array([90.0, 95.0, 100.0])
    at, due = dl.queue_deadlines(2000, times, np.full(3, 100.0), now=100.0, slo=30.0)
    # 1000 arrived in the two intervals seen; the other 1000 are at least as old as the history
    assert at[0] == pytest.approx(30.0 - 10.0)
    assert float(np.interp(at[0], at, due)) >= 1000.0 - 1e-9


def test_earliest_puts_each_intervals_arrivals_at_its_start() -> None:
    # 300 arrived over (90, 95] and 100 over (95, 100]; 350 queued. Spread evenly, the oldest
    # queued arrived at 95 - 5 x 250/300; at the earliest, all 250 came at 90.
    times = np.array([85.0, 90.0, 95.0, 100.0])
    rates = np.array([0.0, 20.0, 60.0, 20.0])
    even_at, even_due = dl.queue_deadlines(350, times, rates, now=100.0, slo=30.0)
    at, due = dl.queue_deadlines(350, times, rates, now=100.0, slo=30.0, earliest=True)
    assert even_at[0] == pytest.approx(95.0 - 5.0 * 250 / 300 + 30.0 - 100.0)
    assert at.tolist() == pytest.approx([20.0, 20.0, 25.0, 25.0])
    assert float(np.interp(20.0, at, due)) == pytest.approx(250.0)  # a step: all 250 due at once
    assert due[-1] == pytest.approx(350.0)


@settings(max_examples=60, deadline=None)
@given(
    queued=st.floats(1, 20_000),
    rates=st.lists(st.floats(0, 2_000), min_size=2, max_size=12),
    u=st.floats(-30, 60),
)
def test_the_earliest_arrivals_are_never_due_later(queued: float, rates: list[float], u: float) -> None:
    """Whatever the history, at least as many messages are due by any instant as with the even spread (the safe side)."""
    times = np.arange(100.0 - 5.0 * (len(rates) - 1), 100.5, 5.0)
    r = np.array(rates)
    even_at, even_due = dl.queue_deadlines(queued, times, r, now=100.0, slo=27.0)
    at, due = dl.queue_deadlines(queued, times, r, now=100.0, slo=27.0, earliest=True)
    assert due[-1] == pytest.approx(even_due[-1])
    assert float(np.interp(u, at, due, left=0.0)) >= float(np.interp(u, even_at, even_due, left=0.0)) - 1e-6


def test_capacity_counts_ready_replicas_then_the_new_ones_after_startup() -> None:
    # 2 ready, 2 more ready in 4 s (started 6 s ago), start-up 10 s, 50 messages/s each
    cap = dl.Capacity(mu=50.0, ready=[(0.0, 2), (4.0, 4)], running=4, startup=10.0)
    at = np.array([2.0, 4.0, 10.0, 20.0])
    n = np.array([4.0, 7.0, 1.0])
    got = dl.started_by(cap, at, n)
    # n = 4 (hold): 2 replicas for 4 s, then 4
    assert got[0].tolist() == pytest.approx([50 * 2 * 2, 50 * 2 * 4, 50 * (8 + 24), 50 * (8 + 64)])
    # n = 7: three more, serving from 10 s on
    assert got[1, 3] == pytest.approx(50 * (8 + 64 + 3 * 10))
    # n = 1: scale-in removes the starting replicas first, then one ready one: 1 serves throughout
    assert got[2].tolist() == pytest.approx([50 * 1 * t for t in at])


@settings(max_examples=60, deadline=None)
@given(
    queued=st.floats(0, 20_000),
    rate=st.floats(0, 2_000),
    ready=st.integers(0, 10),
    starting=st.integers(0, 10),
    mu=st.floats(5, 100),
)
def test_fewest_replicas_is_the_smallest_count_that_meets_every_reachable_deadline(
    queued: float, rate: float, ready: int, starting: int, mu: float
) -> None:
    cap = dl.Capacity(mu=mu, ready=[(0.0, ready), (3.0, ready + starting)], running=ready + starting, startup=10.0)
    times = np.arange(0.0, 101.0, 5.0)
    q_at, q_due = dl.queue_deadlines(queued, times, np.full(times.size, max(rate, 1.0)), 100.0, 27.0)
    d = dl.demand(q_at, q_due, 27.0, rate, rate, 5.0, 42.0, 5.0, [3.0, 10.0, 15.0])
    n, feasible = dl.fewest_replicas(cap, d, 200, 0.0)
    # the planner's own tolerance: with a looser one, 1e-7 messages queued "need" no replica here
    met = dl.started_by(cap, d.at, np.array([float(n)]))[0] >= d.due - 1e-9
    reachable = dl.started_by(cap, d.at, np.array([200.0]))[0] >= d.due - 1e-9
    assert met[reachable].all()
    assert feasible == bool(reachable.all())
    if n > 0:
        fewer = dl.started_by(cap, d.at, np.array([float(n - 1)]))[0] >= d.due - 1e-9
        assert not fewer[reachable].all()


def test_later_checks_that_may_add_replicas_need_fewer_now() -> None:
    cap = dl.Capacity(mu=50.0, ready=[(0.0, 2)], running=2, startup=10.0)
    # 6000 messages at once, due in 40 s; checks every 5 s may double the count
    d = dl.demand(np.zeros(0), np.zeros(0), 40.0, 0.0, 0.0, 5.0, 60.0, 5.0, burst=6000.0)
    alone, _ = dl.fewest_replicas(cap, d, 100, 0.0)
    checks = np.arange(1, 5) * 5.0
    counts = np.arange(101, dtype=float)
    added = dl.growth(counts, 4, lambda c: np.maximum(4.0, c), 100.0)
    assert added[2].tolist() == [4.0, 6.0, 12.0, 24.0]  # 2 -> 6 -> 12 -> 24 -> 48
    helped, ok = dl.with_recourse(cap, d, 100, 0.0, checks, added)
    assert ok and helped < alone
    assert alone == int(np.ceil(6000 / (50 * 30)))  # new replicas serve from 10 s to 40 s


def test_a_burst_arriving_at_once_is_due_one_slo_later() -> None:
    d = dl.demand(np.zeros(0), np.zeros(0), 20.0, 10.0, 5.0, 5.0, 40.0, 5.0, burst=300.0)
    due = dict(zip(d.at.tolist(), d.due.tolist(), strict=True))
    assert due[20.0] == pytest.approx(300.0)
    assert due[25.0] == pytest.approx(300.0 + 10.0 * 5)
    assert due[35.0] == pytest.approx(300.0 + 10.0 * 5 + 5.0 * 10)
