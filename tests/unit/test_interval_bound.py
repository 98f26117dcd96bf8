"""The interval-aware LP bound (agent/sim/lp_bound.py with ``decision_times``) on traces whose answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from docktor.agent.sim.baselines import run_policy
from docktor.agent.sim.lp_bound import available, check_times, lp_bound
from docktor.agent.sim.simulator import Scenario, workload
from docktor.agent.sim.trace_file import Trace

needs_scipy = pytest.mark.skipif(not available(), reason="the LP bound needs scipy (the bench extra; requirements.lock has it)")


def _burst_at_12(startup_s: float) -> tuple[Trace, Scenario]:
    # 50 messages of exactly 20 ms in second 12 of 40: 1 replica-second of work. slo 3.5 s: due by
    # the end of second ceil(1 + 3.5 + 0.02) - 1 + 12 = 16, so seconds 12..16 to do it in. min 0.
    rates = np.zeros(40, dtype=int)
    rates[12] = 50
    return Trace("burst-at-12", rates), Scenario(cv=0.0, startup_s=startup_s, slo_s=3.5, min_replicas=0)


@needs_scipy
def test_a_tick_every_second_is_the_start_up_aware_bound() -> None:
    # the interval constraints hold at that LP's optimum (nothing removed, the count as paid)
    trace = Trace("bursts", np.array([20 if (t % 60) >= 8 else 400 for t in range(180)]))
    scenario = Scenario(startup_s=10.0, slo_s=15.0)
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load, np.arange(180)) == pytest.approx(lp_bound(trace, scenario, load), rel=1e-9)


@needs_scipy
def test_a_burst_between_ticks_pays_the_whole_block() -> None:
    # no start-up: per second, c replicas over seconds 12..16 with 5c = 1 cost 1. Ticks every 10 s:
    # the count is held over [10, 20), 10 seconds paid for the 5 that serve: 2.
    trace, scenario = _burst_at_12(0.0)
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load) == pytest.approx(1.0, abs=1e-6)
    assert lp_bound(trace, scenario, load, check_times(40, 10)) == pytest.approx(2.0, abs=1e-6)
    # a tick when the burst begins and one when it is due: as cheap as any second
    assert lp_bound(trace, scenario, load, np.array([0, 10, 12, 17])) == pytest.approx(1.0, abs=1e-6)


@needs_scipy
def test_start_up_is_paid_from_the_tick() -> None:
    # start-up 2 s. Per second: c ordered at 10, ready at 12, kept to 16: 7c with 5c = 1, 1.4.
    # Ticks every 10 s: ordered at the tick at 10, ready at 12, held until 20: 10c = 2.
    # Ticks at 10, 12 and 17: the per-second schedule is one of theirs, so 1.4 again.
    trace, scenario = _burst_at_12(2.0)
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load) == pytest.approx(1.4, abs=1e-6)
    assert lp_bound(trace, scenario, load, check_times(40, 10)) == pytest.approx(2.0, abs=1e-6)
    assert lp_bound(trace, scenario, load, np.array([0, 10, 12, 17])) == pytest.approx(1.4, abs=1e-6)


@needs_scipy
def test_the_first_seconds_with_one_tick_and_with_two() -> None:
    # test_lp_bound's trace: 1 replica-second in second 0, due by the end of second 4, start-up 2 s,
    # 6 seconds. One tick at 0: c held over all 6 s serves seconds 2..4, 3c = 1, cost 2 (per
    # second: 5/3). Ticks at 0 and 3: c over [0, 3) serves second 2; at 3 it may be removed and
    # still serve second 3 as it drains (the LP lets it serve that whole second, paid as it
    # serves), and e kept serves 3 and 4: 2c + e = 1 for 3c + c + 2e = 4c + 2e, again 2.
    scenario = Scenario(cv=0.0, startup_s=2.0, slo_s=3.5, min_replicas=0)
    trace = Trace("tiny", np.array([50, 0, 0, 0, 0, 0]))
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load) == pytest.approx(5 / 3, abs=1e-6)
    assert lp_bound(trace, scenario, load, np.array([0])) == pytest.approx(2.0, abs=1e-6)
    assert lp_bound(trace, scenario, load, np.array([0, 3])) == pytest.approx(2.0, abs=1e-6)


@needs_scipy
def test_a_constant_load_loses_nothing_to_the_interval() -> None:
    # 100 messages of 20 ms a second: 2 replicas' work, and min 2. Any tick set: 2 x 300.
    scenario = Scenario(cv=0.0, startup_s=10.0, slo_s=30.0, min_replicas=2)
    trace = Trace("flat", np.full(300, 100))
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load) == pytest.approx(600.0, abs=1e-6)
    assert lp_bound(trace, scenario, load, check_times(300, 30)) == pytest.approx(600.0, abs=1e-6)


@needs_scipy
def test_before_the_first_tick_the_count_is_the_minimum() -> None:
    # first tick at 10 with the burst at 12 and no start-up: nothing can serve before 10 anyway,
    # and the count is held over [10, 40): 30c with 5c = 1
    trace, scenario = _burst_at_12(0.0)
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load, np.array([10])) == pytest.approx(6.0, abs=1e-6)


@needs_scipy
def test_it_lies_between_the_every_second_bound_and_a_run_with_those_ticks() -> None:
    trace = Trace("bursts", np.array([20 if (t % 60) >= 8 else 400 for t in range(300)]))
    scenario = Scenario(startup_s=10.0, slo_s=15.0, interval_s=10.0)
    load = workload(trace, scenario)
    run = run_policy("docktor", trace, scenario, load)
    ticks = np.array([t for t, _, _ in run.timeline if t < trace.duration])
    assert np.array_equal(ticks, check_times(trace.duration, 10.0, warm_up=True))  # 0, 5, 10, 20, ...
    assert np.array_equal(check_times(30, 10.0), [0, 10, 20])
    per_second, held = lp_bound(trace, scenario, load), lp_bound(trace, scenario, load, ticks)
    assert per_second is not None and held is not None
    assert per_second < held <= run.replica_seconds


def test_decision_times_must_be_sorted_whole_seconds() -> None:
    trace, scenario = _burst_at_12(0.0)
    load = workload(trace, scenario)
    with pytest.raises(ValueError, match="decision_times"):
        lp_bound(trace, scenario, load, np.array([0.0, 2.5]))
    with pytest.raises(ValueError, match="decision_times"):
        lp_bound(trace, scenario, load, np.array([10, 0]))


@needs_scipy
def test_a_fractional_start_up_lags_its_floor() -> None:
    # start-up 1.5 s. A replica ordered at 10.5 is ready at 12 and serves seconds 12..16 (5c = 1),
    # paid from 10.5 to 17: 6.5c = 1.3. The bound must lie below that schedule: with a lag of
    # floor(1.5) = 1 it pays seconds 11..16, 6c = 1.2; ceil(1.5) = 2 would say 1.4, above it.
    trace, scenario = _burst_at_12(1.5)
    load = workload(trace, scenario)
    bound = lp_bound(trace, scenario, load)
    assert bound == pytest.approx(1.2, abs=1e-6)
    assert bound <= 1.3
    # the tick-bound LP with a tick every second agrees
    assert lp_bound(trace, scenario, load, np.arange(40)) == pytest.approx(bound, abs=1e-6)
