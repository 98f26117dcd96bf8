"""Which past surge the docktor policy insures (agent/core/surges.py): recent, or one that came back."""

from __future__ import annotations

import numpy as np

from docktor.agent.core.surges import came_back, insured


def reads(rates: list[float], every: float = 30.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads every ``every`` seconds from t = every: (times, volumes, rates)."""
    r = np.array(rates, dtype=float)
    return np.arange(1, r.size + 1) * every, r * every, r


def test_a_crowd_that_fades_is_one_surge_not_a_recurrence() -> None:
    # 1400/s falling by a fifth per read: never back below half of itself between two reads
    # that are then compared, so nothing came back
    times, volumes, rates = reads([50, 1400, 1120, 900, 720, 580, 460, 370, 300, 240, 190, 150, 120, 100])
    assert came_back(times, volumes, rates, 0.0, 60.0) == (0.0, 0.0)
    # 6 min after the crowd, a recent span of 3 min holds only the tail: that is what is insured
    got = insured(times, volumes, rates, float(times[-1]), 180.0, 60.0)
    assert (got.burst, got.peak, got.again) == (300 * 30.0, 300.0, False)


def test_two_spikes_with_calm_between_came_back_at_the_smaller_level() -> None:
    times, volumes, rates = reads([90, 900, 90, 90, 90, 600, 90, 90, 90, 90, 90, 90, 90, 90, 90])
    assert came_back(times, volumes, rates, 0.0, 60.0) == (600 * 30.0, 600.0)
    got = insured(times, volumes, rates, float(times[-1]), 120.0, 60.0)
    assert (got.burst, got.peak, got.again) == (600 * 30.0, 600.0, True)


def test_reads_closer_than_apart_are_one_surge() -> None:
    # the dip lasts one 30 s read: the two highs are 60 s apart, under 90 s
    times, volumes, rates = reads([90, 900, 90, 800, 90, 90, 90])
    assert came_back(times, volumes, rates, 0.0, 90.0) == (0.0, 0.0)
    assert came_back(times, volumes, rates, 0.0, 60.0) == (800 * 30.0, 800.0)
