"""``queue.oldest_age`` from a broker's message time (``docktor.tools.sdk.age_since``) and what
each source makes of the times it reads: a time a little ahead of this clock is the skew between
two hosts (age 0); one further ahead, in the year 33658 (milliseconds read as seconds), before
2000 (an unset property) or not a number is missing with the reason (:class:`Missing`), which
:func:`admit` refuses, so it never drives a decision."""

from __future__ import annotations

import math

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.config.model import Rule, Rules
from docktor.agent.core.rules import evaluate
from docktor.agent.problems import UsageError
from docktor.tools.sdk import CLOCK_SKEW, STANDARD_METRICS, Missing, admit, age_since, rfc3339_epoch
from docktor.tools.sources.rabbitmq import MANAGEMENT_METRICS
from docktor.tools.sources.rabbitmq_head import NO_STATISTICS, NO_TIMESTAMP, NOT_REPORTED, NOTHING_READY, head_age
from docktor.tools.sources.redis import STREAM_METRICS, entry_age

NOW = 1_796_648_000.0  # 2026-12-07T12:53:20Z
AGES = {name: STANDARD_METRICS[name] for name in ("queue.oldest_age", "queue.oldest_in_flight_age")}


def refused(value: float) -> str:
    """Why :func:`admit` refuses ``value`` as ``queue.oldest_age`` (it must)."""
    kept, why = admit({"queue.oldest_age": value, "queue.backlog": 3.0}, AGES)
    assert kept == {"queue.backlog": 3.0}, kept
    return why["queue.oldest_age"]


def test_an_age_is_now_minus_then_and_a_little_skew_is_just_now() -> None:
    assert age_since(NOW - 42.5, NOW) == 42.5
    assert age_since(NOW, NOW) == 0.0
    assert age_since(NOW + CLOCK_SKEW, NOW) == 0.0  # the broker's clock a little ahead: just published
    assert admit({"queue.oldest_age": age_since(NOW + 1.0, NOW)}, AGES) == ({"queue.oldest_age": 0.0}, {})


@pytest.mark.parametrize(("published", "why"), [
    (1e12, "the oldest message's time (the year 33658) is 31632 years ahead of this clock (milliseconds read as seconds?)"),
    (NOW * 1000, "the oldest message's time (the year 58903) is "),
    (NOW + 3600, "the oldest message's time (2026-12-07T13:53:20Z) is 1.0 h ahead of this clock (a clock set wrong, or not a publish time)"),
    (NOW + CLOCK_SKEW + 0.5, "the oldest message's time (2026-12-07T12:53:22Z) is 2.5 s ahead of this clock"),
    (0.0, "the oldest message's time (1970-01-01T00:00:00Z) is before 2000: not when a message was published (an unset timestamp?)"),
    (-5.0, "the oldest message's time (1969-12-31T23:59:55Z) is before 2000"),
    (math.nan, "the oldest message's time is nan, not a time"),
    (math.inf, "the oldest message's time is inf, not a time"),
])
def test_an_impossible_time_is_missing_with_the_reason_never_an_age(published: float, why: str) -> None:
    age = age_since(published, NOW)
    assert isinstance(age, Missing) and math.isnan(age)
    assert refused(age).startswith(why)
    # NaN: a rule comparing it never matches, whichever way it is written
    rules = Rules(scale_up_when=[Rule(metric="queue.oldest_age", op=">", value=30)],
                  scale_down_when=[Rule(metric="queue.oldest_age", op="<", value=30)])
    ev = evaluate(rules, {"queue.oldest_age": age})
    assert not ev.up_fired and not ev.down_fired


def test_nats_times_have_nanoseconds() -> None:
    assert rfc3339_epoch("2026-12-07T12:53:20.123456789Z") == pytest.approx(NOW + 0.123456789)
    assert rfc3339_epoch("2026-12-07T13:53:20+01:00") == NOW
    assert rfc3339_epoch("2026-12-07 12:53:20") is None and rfc3339_epoch("2026-13-40T00:00:00Z") is None


@pytest.mark.parametrize(("entry_id", "expected"), [
    (f"{int(NOW * 1000) - 1500}-0", 1.5),
    (f"{int(NOW * 1000) + 1000}-3", 0.0),  # Redis's ID clock and its TIME agree; skew is the producer's
])
def test_a_redis_entry_id_is_its_time(entry_id: str, expected: float) -> None:
    assert entry_age(entry_id, NOW) == pytest.approx(expected)
    assert {"queue.oldest_age", "queue.oldest_in_flight_age"} <= set(STREAM_METRICS)


@pytest.mark.parametrize(("entry_id", "why"), [
    ("1-0", "entry 1-0's ID time (1970-01-01T00:00:00Z) is before 2000"),  # an ID the producer chose
    (f"{int(NOW * 1000 * 1000)}-0", "entry "),  # microseconds: far in the future
    ("not-an-id", "entry ID 'not-an-id' is not <milliseconds>-<sequence>"),
])
def test_a_redis_entry_id_that_is_no_time_is_missing(entry_id: str, why: str) -> None:
    assert refused(entry_age(entry_id, NOW)).startswith(why)


@pytest.mark.parametrize(("queue", "expected"), [
    ({"messages_ready": 2, "head_message_timestamp": int(NOW) - 30}, 30.0),
    ({"messages_ready": 0, "head_message_timestamp": None}, NOTHING_READY),
    ({"messages_ready": 2, "head_message_timestamp": None}, NO_TIMESTAMP),
    ({"messages_ready": 2}, NOT_REPORTED),
    ({}, NO_STATISTICS),
])
def test_rabbitmq_head_message_timestamp(queue: dict[str, object], expected: float | str) -> None:
    assert head_age(queue, NOW) == expected
    assert "queue.oldest_age" in MANAGEMENT_METRICS


@pytest.mark.parametrize(("stamp", "why"), [
    (int(NOW * 1000), "the head message's timestamp property (the year 58903) is "),
    ("yesterday", "head_message_timestamp 'yesterday' is not a number"),
])
def test_a_rabbitmq_timestamp_that_is_no_time_is_missing(stamp: object, why: str) -> None:
    assert refused(head_age({"messages_ready": 1, "head_message_timestamp": stamp}, NOW)).startswith(why)


SERVICE = """
services:
  - name: w
    command: ['true']
    policy: rules
    queue: {queue}
    rules:
      scale_up_when: [{{metric: queue.oldest_age, op: ">", value: 30}}]
"""


@pytest.mark.parametrize("queue", [
    "{kind: nats, stream: S, consumer: C}",
    "{kind: redis, stream: events, group: workers}",
    "{kind: rabbitmq, queue: jobs}",
])
def test_a_rule_may_use_the_oldest_age_of_a_source_that_gives_it(queue: str) -> None:
    (svc,) = parse_config(SERVICE.format(queue=queue)).services
    assert "queue.oldest_age" in svc.rule_metrics()


@pytest.mark.parametrize("queue", [
    "{kind: redis, list: jobs}",
    "{kind: redis, celery_queue: celery}",
    "{kind: rabbitmq, url: 'amqp://127.0.0.1:5672', queue: jobs}",
])
def test_a_rule_on_the_oldest_age_of_a_source_that_cannot_tell_is_a_config_error(queue: str) -> None:
    with pytest.raises(UsageError, match=r"services\[0\]\.rules\.scale_up_when\[0\]\.metric: unknown metric 'queue.oldest_age'"):
        parse_config(SERVICE.format(queue=queue))
