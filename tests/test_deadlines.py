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
    met = dl.started_by(cap, d.at, np.array([float(n)]))[0] >= d.due - 1e-6
    reachable = dl.started_by(cap, d.at, np.array([200.0]))[0] >= d.due - 1e-6
    assert met[reachable].all()
    assert feasible == bool(reachable.all())
    if n > 0:
        fewer = dl.started_by(cap, d.at, np.array([float(n - 1)]))[0] >= d.due - 1e-6
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
