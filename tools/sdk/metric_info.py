"""What a metric means: its unit and help, and the standard names every queue source shares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: Observations are plain ``metric name -> number`` maps. A metric that could not be read is
#: *absent*, never zero.
Metrics = dict[str, float]


@dataclass(frozen=True)
class MetricInfo:
    """What one metric means. ``unit`` follows Prometheus base units (``messages``,
    ``messages_per_second``, ``replicas``, ``percent``, ``mebibytes``, ``seconds``, ``ratio``)."""

    unit: str
    help: str
    #: a metric that may be below zero (a difference, a temperature); most are counts, rates or
    #: ages, for which a negative value is a broken reading and is treated as missing (:func:`admit`)
    signed: bool = False


#: The names every queue source should use for the same meaning, so that rules, policies and the
#: LLM advisor work on any of them. A source may produce names of its own too.
STANDARD_METRICS: Mapping[str, MetricInfo] = {
    "queue.pending": MetricInfo("messages", "messages not yet delivered to a worker"),
    "queue.ack_pending": MetricInfo("messages", "messages delivered but not yet acknowledged (in flight)"),
    "queue.backlog": MetricInfo("messages", "pending + ack_pending: all work not yet done"),
    "queue.redelivered": MetricInfo("messages", "messages delivered more than once and still unacknowledged"),
    "queue.waiting": MetricInfo("requests", "pull requests waiting for messages (idle workers asking for work)"),
    "queue.lag": MetricInfo("messages", "messages the consumer has not been handed yet (stream end minus its position)"),
    "queue.rate_in": MetricInfo("messages_per_second", "messages arriving per second"),
    "queue.rate_out": MetricInfo("messages_per_second", "messages completed (acknowledged) per second"),
    "queue.consumers": MetricInfo("consumers", "consumers attached to the queue"),
    "queue.oldest_age": MetricInfo("seconds", "how long the oldest message not yet handed to a worker has waited"),
    "queue.oldest_in_flight_age": MetricInfo("seconds", "how long ago the oldest unacknowledged message was handed to a worker"),
    "replicas.running": MetricInfo("replicas", "replicas running now (and healthy, where health is known)"),
    "replicas.desired": MetricInfo("replicas", "replicas the executor was last asked for"),
    "replicas.failed": MetricInfo("replicas", "replicas that exited, crashed or are restart-looping"),
    "cpu.avg": MetricInfo("percent", "mean CPU percent over running replicas (100 = one core)"),
    "cpu.max": MetricInfo("percent", "highest CPU percent of any running replica"),
    "mem.avg_mb": MetricInfo("mebibytes", "mean resident memory per running replica"),
    "mem.max_mb": MetricInfo("mebibytes", "highest resident memory of any running replica"),
    "mem.avg_pct": MetricInfo("percent", "mean memory use as percent of the container limit, where one is set"),
}


class Missing(float):
    """A value a plugin read but cannot mean, with why (``Missing("the message's time is 3 h
    ahead of this clock")``): :func:`admit` refuses it with that reason, which the decision record
    then shows. It is a NaN float, so anything that skips :func:`admit` cannot act on it either
    (every comparison with NaN is false)."""

    why: str

    def __new__(cls, why: str) -> Missing:
        value = super().__new__(cls, math.nan)
        value.why = why
        return value

    def __repr__(self) -> str:
        return f"Missing({self.why!r})"


def standard(*names: str) -> dict[str, MetricInfo]:
    """The :data:`STANDARD_METRICS` entries for ``names``, for a plugin's ``provides``."""
    return {name: STANDARD_METRICS[name] for name in names}



def admit(metrics: Mapping[str, float], infos: Mapping[str, MetricInfo]) -> tuple[Metrics, dict[str, str]]:
    """Split a plugin's reading into the values a metric can mean and the ones it cannot.

    Every value must be a finite number; a metric that is not :attr:`MetricInfo.signed` (counts,
    rates, ages, replicas: all of the standard ones) must also be ``>= 0``. A value outside its
    metric's domain is *missing*, with the reason, never clamped: a queue reported at ``-50`` is
    a broken reading, not an empty queue, and must not drive a scale-in. A metric the plugin did
    not declare is held to the default domain (finite, ``>= 0``).

    Returns the admitted metrics and, per refused metric, why (``"-50 is negative, which
    queue.backlog cannot be"``).
    """
    kept: Metrics = {}
    refused: dict[str, str] = {}
    for name, value in metrics.items():
        info = infos.get(name) or STANDARD_METRICS.get(name)
        if isinstance(value, Missing):
            refused[name] = value.why
        elif isinstance(value, bool) or not isinstance(value, int | float):
            refused[name] = f"{type(value).__name__} is not a number"
        elif not math.isfinite(value):
            refused[name] = f"{value} is not a finite number"
        elif value < 0 and not (info is not None and info.signed):
            # a standard metric is never signed; any other may be declared so (a difference, a delta)
            unless = "" if name in STANDARD_METRICS else " unless declared signed"
            refused[name] = f"{value:g} is negative, which {name} cannot be{unless}"
        else:
            kept[name] = float(value)
    return kept, refused
