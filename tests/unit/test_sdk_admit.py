"""``docktor.tools.sdk.admit``: the domain a metric's value must be in. A number a source cannot mean
(negative depth, NaN, infinity, not a number at all) is missing, with the reason, never clamped:
missing data never drives a scale-in; a metric declared signed may be below 0."""

from __future__ import annotations

import math
from typing import Any

import pytest

from docktor.tools.sdk import MetricInfo, admit, standard

QUEUE = standard("queue.backlog", "queue.rate_out")
DELTA = {"temperature.delta": MetricInfo("celsius", "change over 10 minutes", signed=True)}


def test_counts_and_rates_in_their_domain_are_kept_as_floats() -> None:
    kept, refused = admit({"queue.backlog": 12, "queue.rate_out": 0.0}, QUEUE)
    assert kept == {"queue.backlog": 12.0, "queue.rate_out": 0.0} and refused == {}
    assert all(type(v) is float for v in kept.values())


def test_a_negative_count_is_missing_with_the_reason() -> None:
    kept, refused = admit({"queue.backlog": -50.0, "queue.rate_out": 3.0}, QUEUE)
    assert kept == {"queue.rate_out": 3.0}  # the rest of the reading stands
    assert refused == {"queue.backlog": "-50 is negative, which queue.backlog cannot be"}


def test_a_signed_metric_may_be_below_zero() -> None:
    assert admit({"temperature.delta": -50.0}, DELTA) == ({"temperature.delta": -50.0}, {})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_what_is_not_finite_is_missing_even_when_signed(value: float) -> None:
    kept, refused = admit({"temperature.delta": value, "queue.backlog": value}, {**DELTA, **QUEUE})
    assert kept == {}
    assert set(refused) == {"temperature.delta", "queue.backlog"}
    assert all("is not a finite number" in why for why in refused.values())


@pytest.mark.parametrize(("value", "why"), [(True, "bool is not a number"), ("12", "str is not a number"), (None, "NoneType is not a number")])
def test_what_is_not_a_number_is_missing(value: Any, why: str) -> None:
    assert admit({"queue.backlog": value}, QUEUE) == ({}, {"queue.backlog": why})


def test_a_standard_name_keeps_its_domain_when_the_plugin_did_not_declare_it() -> None:
    kept, refused = admit({"queue.lag": -1.0}, {})
    assert kept == {} and refused == {"queue.lag": "-1 is negative, which queue.lag cannot be"}


def test_a_metric_nobody_declared_is_held_to_the_default_domain() -> None:
    kept, refused = admit({"jobs.delta": -0.5, "jobs.size": 0.0}, {})
    assert kept == {"jobs.size": 0.0}
    assert refused == {"jobs.delta": "-0.5 is negative, which jobs.delta cannot be unless declared signed"}


def test_a_plugin_metric_without_a_unit_says_it_is_not_signed() -> None:
    kept, refused = admit({"jobs.delta": -3.0}, {"jobs.delta": MetricInfo("", "PromQL: delta(jobs[5m])")})
    assert kept == {} and refused == {"jobs.delta": "-3 is negative, which jobs.delta cannot be unless declared signed"}
