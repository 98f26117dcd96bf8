"""``docktor.tools.sdk.RateTracker``: exact rates between two readings of cumulative counters, none
(with the reason) across a jump, and a baseline that goes through JSON and comes back after a
restart. The counters here are a queue's as a source would read them; the clock is the test's."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from docktor.tools.sdk import Counters, RateTracker

RATES = {"queue.rate_in", "queue.rate_out"}


class Queue(Counters):
    """A queue's counters: published and acknowledged ever, and the queue's incarnation."""

    published: int
    acked: int
    incarnation: int = 1

    def totals(self) -> tuple[int, int]:
        return self.published, self.acked

    def discontinuity(self, earlier: Queue) -> str | None:
        return "queue re-created" if self.incarnation != earlier.incarnation else None


def tracker(**options: Any) -> RateTracker[Queue]:
    return RateTracker(Queue, label="vhost/jobs", log=logging.getLogger("docktor.test_rates"), **options)


def through_json(data: dict[str, Any] | None) -> dict[str, Any]:
    assert data is not None
    return json.loads(json.dumps(data))  # the daemon's state file


def test_the_first_reading_has_no_rates_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    t = tracker()
    assert t.update(Queue(published=10, acked=4), now=100.0) == {}
    assert t.last_reset == "first reading"
    assert caplog.records == []  # a first reading is not news


def test_rates_are_the_counters_change_over_the_time_between_readings() -> None:
    t = tracker()
    t.update(Queue(published=10, acked=4), now=100.0)
    assert t.update(Queue(published=40, acked=10), now=110.0) == {"queue.rate_in": 3.0, "queue.rate_out": 0.6}
    assert t.last_reset is None
    assert t.update(Queue(published=40, acked=10), now=115.0) == {"queue.rate_in": 0.0, "queue.rate_out": 0.0}  # a real 0


def test_no_time_elapsed_keeps_the_older_baseline() -> None:
    t = tracker()
    t.update(Queue(published=0, acked=0), now=100.0)
    assert t.update(Queue(published=5, acked=0), now=100.0) == {}
    assert t.last_reset == "no time elapsed since the previous reading"
    assert t.update(Queue(published=8, acked=2), now=104.0) == {"queue.rate_in": 2.0, "queue.rate_out": 0.5}  # from t=100


def test_a_jump_the_source_names_omits_the_rates_once_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    t = tracker()
    t.update(Queue(published=50, acked=50), now=100.0)
    # more messages than before, so only the source's own sign can tell it is another queue
    assert t.update(Queue(published=70, acked=60, incarnation=2), now=105.0) == {}
    assert t.last_reset == "queue re-created"
    assert [r.getMessage() for r in caplog.records] == ["vhost/jobs: queue re-created; rates resume next tick"]
    assert t.update(Queue(published=80, acked=60, incarnation=2), now=110.0) == {"queue.rate_in": 2.0, "queue.rate_out": 0.0}


@pytest.mark.parametrize(("published", "acked"), [(10, 5), (60, 0)])
def test_a_counter_that_went_backwards_is_a_jump_even_unnamed(published: int, acked: int) -> None:
    t = tracker()
    t.update(Queue(published=50, acked=20), now=100.0)
    assert t.update(Queue(published=published, acked=acked), now=105.0) == {}  # never a negative rate
    assert t.last_reset == "a counter went backwards"


def test_a_reset_makes_the_next_reading_start_a_baseline_and_keeps_the_first_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    t = tracker()
    t.update(Queue(published=5, acked=5), now=100.0)
    t.reset("queue re-created")  # the queue was missing: whatever comes back is new
    t.reset("no statistics yet")
    assert t.last_reset == "no statistics yet"
    assert t.update(Queue(published=1, acked=0), now=105.0) == {}
    assert t.last_reset == "queue re-created"
    assert [r.getMessage() for r in caplog.records] == ["vhost/jobs: queue re-created; rates resume next tick"]
    assert t.update(Queue(published=3, acked=1), now=107.0) == {"queue.rate_in": 1.0, "queue.rate_out": 0.5}


def test_the_same_reading_within_the_window_repeats_the_latest_rates() -> None:
    # A broker that publishes statistics every 5 s answers the same figures in between.
    t = tracker(repeat_same_within=10.0)
    t.update(Queue(published=0, acked=0), now=100.0)
    assert t.update(Queue(published=50, acked=25), now=105.0) == {"queue.rate_in": 10.0, "queue.rate_out": 5.0}
    same = t.update(Queue(published=50, acked=25), now=107.0)
    assert same == {"queue.rate_in": 10.0, "queue.rate_out": 5.0}  # not a rate of 0
    assert t.last_reset == "no new statistics since the previous reading"
    # the next sample's rate spans from when the previous one was first seen (t=105), not t=107
    assert t.update(Queue(published=100, acked=25), now=110.0) == {"queue.rate_in": 10.0, "queue.rate_out": 0.0}
    # unchanged for longer than the window: a real 0
    assert t.update(Queue(published=100, acked=25), now=121.0) == {"queue.rate_in": 0.0, "queue.rate_out": 0.0}


# --------------------------------------------------------------------------- across a restart


def test_nothing_to_keep_before_a_reading_or_after_a_reset() -> None:
    t = tracker()
    assert t.snapshot(now=1.0) is None
    t.update(Queue(published=1, acked=0), now=1.0)
    assert t.snapshot(now=2.0) is not None
    t.reset("queue re-created")
    assert t.snapshot(now=3.0) is None


def test_the_baseline_survives_a_restart_through_json() -> None:
    before = tracker()
    before.update(Queue(published=10, acked=0), now=1000.0)
    saved = through_json(before.snapshot(now=1004.0))  # saved 4 s after the last reading
    after = tracker()  # another process: its monotonic clock has nothing to do with the first's
    assert after.restore(saved, elapsed=6.0, now=50.0)  # 6 s of wall-clock time until it started
    assert after.update(Queue(published=40, acked=10), now=50.0) == {"queue.rate_in": 3.0, "queue.rate_out": 1.0}


def test_a_jump_while_the_daemon_was_down_gives_no_rates() -> None:
    before = tracker()
    before.update(Queue(published=50, acked=50), now=10.0)
    after = tracker()
    assert after.restore(through_json(before.snapshot(now=10.0)), elapsed=3.0, now=1.0)
    assert after.update(Queue(published=5, acked=0, incarnation=2), now=2.0) == {}
    assert after.last_reset == "queue re-created"


def test_the_latest_rates_come_back_too() -> None:
    before = tracker(repeat_same_within=10.0)
    before.update(Queue(published=0, acked=0), now=0.0)
    before.update(Queue(published=20, acked=10), now=5.0)
    after = tracker(repeat_same_within=10.0)
    assert after.restore(through_json(before.snapshot(now=6.0)), elapsed=1.0, now=0.0)
    # the broker has not published new statistics since: the rates of its latest period, not 0
    assert after.update(Queue(published=20, acked=10), now=1.0) == {"queue.rate_in": 4.0, "queue.rate_out": 2.0}


@pytest.mark.parametrize(
    "data",
    [
        {"v": 99, "age_s": 1, "counters": {"published": 1, "acked": 1}},
        {"v": 1, "age_s": float("nan"), "counters": {"published": 1, "acked": 1}},
        {"v": 1, "age_s": -5, "counters": {"published": 1, "acked": 1}},
        {"v": 1, "age_s": float("inf"), "counters": {"published": 1, "acked": 1}},
        {"v": 1, "age_s": 1, "counters": {"published": 1, "acked": 1}, "rates": {"queue.rate_in": float("nan")}},
    ],
)
def test_a_snapshot_of_another_format_or_an_impossible_age_is_refused(data: dict[str, Any]) -> None:
    t = tracker()
    assert t.restore(data, elapsed=1.0, now=10.0) is False
    assert t.snapshot(now=10.0) is None


@pytest.mark.parametrize("counters", [{"published": "many", "acked": 1}, {"published": 1}, {"published": 1, "acked": 1, "x": 2}])
def test_counters_that_do_not_fit_raise_value_error(counters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        tracker().restore({"v": 1, "age_s": 1, "counters": counters}, elapsed=1.0, now=10.0)
    assert isinstance(info.value, ValueError)  # what the daemon catches, logs, and starts without a baseline
