"""The check schedule (agent/core/schedule.py) the daemon's loop and the simulator share:
the drift-free grid, the overrun rule, and the warm-up read after the first."""

from __future__ import annotations

import pytest

from docktor.agent.core.schedule import WARM_UP_S, due, next_tick


def test_the_warm_up_read_comes_warm_up_s_after_the_first_then_the_grid() -> None:
    # 30 s checks, loop started at 100, sources with rates: 100, 105, 130, 160, ...
    assert [due(100.0, 30.0, k, warm_up=True) for k in range(5)] == [100.0, 105.0, 130.0, 160.0, 190.0]
    assert next_tick(100.0, 30.0, 0, 100.4, warm_up=True) == (1, pytest.approx(4.6))  # the warm-up read
    assert next_tick(100.0, 30.0, 1, 105.3, warm_up=True) == (2, pytest.approx(24.7))  # back on the grid at 130
    assert next_tick(100.0, 30.0, 2, 130.2, warm_up=True) == (3, pytest.approx(29.8))


def test_without_rates_or_at_short_intervals_the_schedule_is_the_plain_grid() -> None:
    for interval in (1.0, 2.5, WARM_UP_S):  # min(interval, WARM_UP_S) is the interval itself
        assert [due(0.0, interval, k, warm_up=True) for k in range(4)] == [k * interval for k in range(4)]
        assert next_tick(0.0, interval, 0, 0.3, warm_up=True) == next_tick(0.0, interval, 0, 0.3)
    # no rates to wait for (a Redis list's length): no warm-up at 30 s either
    assert [due(100.0, 30.0, k) for k in range(3)] == [100.0, 130.0, 160.0]
    assert next_tick(100.0, 30.0, 0, 100.4) == (1, pytest.approx(29.6))


def test_an_overrun_still_runs_one_tick_at_once_then_the_grid_with_the_warm_up() -> None:
    # A first tick (a slow scale command) ending at 112: the warm-up slot (105) passed, run it now;
    # then the grid's 130.
    assert next_tick(100.0, 30.0, 0, 112.0, warm_up=True) == (1, 0.0)
    assert next_tick(100.0, 30.0, 1, 112.1, warm_up=True) == (2, pytest.approx(17.9))
    # One ending at 141: the warm-up and the 130 slot both passed; the 130 slot runs now (one
    # tick, not two back to back), the next at 160.
    assert next_tick(100.0, 30.0, 0, 141.0, warm_up=True) == (2, 0.0)
    assert next_tick(100.0, 30.0, 2, 141.2, warm_up=True) == (3, pytest.approx(18.8))
    # Later on the grid: tick 3 (due 160) ending at 197 missed 190: run it now, then 220.
    assert next_tick(100.0, 30.0, 3, 197.0, warm_up=True) == (4, 0.0)
    assert next_tick(100.0, 30.0, 4, 197.5, warm_up=True) == (5, pytest.approx(22.5))
    # The warm-up tick itself overrunning the 130 slot: that slot now.
    assert next_tick(100.0, 30.0, 1, 133.0, warm_up=True) == (2, 0.0)
