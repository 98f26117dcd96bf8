"""Rates from cumulative counters: ``queue.rate_in`` and ``queue.rate_out`` between two readings.

A queue's counters (messages published, acknowledged) only grow, until they do not: a queue
deleted and re-created, a broker restarted, a stream purged or restored from a backup starts
them again or moves them without traffic. A rate across such a jump is a lie (a spike, or a
negative throughput), so the tracker omits the rates for that reading, says why
(:attr:`RateTracker.last_reset`), and starts a new baseline: a missing rate is honest, a spike
is not. Each source says what a jump looks like for its counters (:meth:`Counters.discontinuity`);
a counter that went backwards is always one.

The baseline survives a daemon restart: :meth:`RateTracker.snapshot` gives it as JSON for the
daemon's state file, and :meth:`RateTracker.restore` takes it back, so the first reading after a
restart has rates over the whole time since the last one before it.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from docktor.tools.sdk.metric_info import Metrics

__all__ = ["Counters", "RateTracker"]

#: the version of :meth:`RateTracker.snapshot`'s format
_FORMAT = 1


class Counters(BaseModel):
    """What one reading tells about a queue's cumulative counters: the baseline of the next
    reading's rates.

    A subclass declares its fields (numbers, strings, datetimes: they go through JSON in the
    daemon's state file), which of them count arrivals and completions (:meth:`totals`), and what else shows that two readings cannot be compared
    (:meth:`discontinuity`). Two equal instances are the same reading.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @abstractmethod
    def totals(self) -> tuple[int, int]:
        """Messages that ever arrived (published, added to the stream) and that ever completed
        (acknowledged): the counters of ``queue.rate_in`` and ``queue.rate_out``."""

    def discontinuity(self, earlier: Self) -> str | None:
        """Why the change since ``earlier`` is not traffic (the queue was re-created, the server
        restarted, a purge), or None when it is. A counter that went backwards need not be named:
        the tracker always treats that as a jump."""
        return None


C = TypeVar("C", bound=Counters)


class RateTracker(Generic[C]):
    """``queue.rate_in`` / ``queue.rate_out`` of one queue, from the :class:`Counters` of
    consecutive readings, each taken at a time on the source's own monotonic clock.

    ``label`` names the queue in the log line that says a baseline was reset (``ORDERS/WORKERS:
    stream re-created; rates resume next tick``), on the source's ``log``. A server that publishes
    its statistics periodically (RabbitMQ) answers the same reading until its next period: with
    ``repeat_same_within``, a reading equal to the baseline and younger than that many seconds
    repeats the latest rates and keeps the baseline, instead of claiming a rate of 0.
    """

    def __init__(self, counters: type[C], *, label: str, log: logging.Logger, repeat_same_within: float = 0.0) -> None:
        self._counters = counters
        self._label = label
        self._log = log
        self._repeat_same_within = repeat_same_within
        self._base: C | None = None
        self._base_at = 0.0
        #: why the next reading cannot have rates, whatever its counters
        self._pending: str | None = "first reading"
        self._rates: Metrics = {}
        #: why the latest reading has no rates, when it has none (first reading, re-created queue, ...)
        self.last_reset: str | None = None

    def update(self, counters: C, now: float) -> Metrics:
        """The rates since the baseline, with ``counters`` read at ``now`` as the next baseline;
        none (``{}``, :attr:`last_reset` saying why) on a first reading, after a reset, or across
        a discontinuity."""
        base, elapsed = self._base, now - self._base_at
        if self._pending is not None or base is None:
            reset: str | None = self._pending or "first reading"
        else:
            reset = self._jump(base, counters)
        if reset is None and counters == base and elapsed < self._repeat_same_within:
            # the server has published no new statistics since the baseline: the same reading
            # again is no evidence of a rate of 0
            self.last_reset = "no new statistics since the previous reading"
            return dict(self._rates)
        if reset is None and elapsed <= 0:
            # keep the older baseline, so that the next rate spans a real interval
            self.last_reset = "no time elapsed since the previous reading"
            return {}
        self._rates = {}
        if reset is None:
            assert base is not None
            (arrived, completed), (arrived_before, completed_before) = counters.totals(), base.totals()
            self._rates = {
                "queue.rate_in": (arrived - arrived_before) / elapsed,
                "queue.rate_out": (completed - completed_before) / elapsed,
            }
        elif base is not None or reset != "first reading":
            self._log.info("%s: %s; rates resume next tick", self._label, reset)
        self.last_reset, self._pending = reset, None
        self._base, self._base_at = counters, now
        return dict(self._rates)

    def reset(self, why: str) -> None:
        """Forget the baseline: the counters cannot be compared with what comes next (the queue
        is gone, its statistics are unknown), and the next reading has no rates, saying ``why``
        (the first reason since the last reading with counters, when there are several)."""
        self._base, self._rates = None, {}
        self._pending = self._pending or why
        self.last_reset = why

    @staticmethod
    def _jump(base: C, counters: C) -> str | None:
        why = counters.discontinuity(base)
        if why is None and any(now < then for now, then in zip(counters.totals(), base.totals(), strict=True)):
            why = "a counter went backwards"
        return why

    # ------------------------------------------------------------------ across a restart

    def snapshot(self, now: float) -> dict[str, Any] | None:
        """The baseline as JSON-ready data (its age at ``now`` rather than a time: the daemon adds
        the wall-clock time that passes until :meth:`restore`); None without one."""
        if self._base is None or self._pending is not None:
            return None
        return {
            "v": _FORMAT,
            "age_s": now - self._base_at,
            "counters": self._base.model_dump(mode="json"),
            "rates": dict(self._rates),
        }

    def restore(self, data: Mapping[str, Any], elapsed: float, now: float) -> bool:
        """Take back what :meth:`snapshot` gave, ``elapsed`` seconds later, at ``now``. False for
        another format or an impossible age; ``ValueError`` (pydantic's) for counters that do not
        fit. A jump meanwhile (a queue re-created while the daemon was down) is caught by the next
        :meth:`update` like one between two readings."""
        if data.get("v") != _FORMAT:
            return False
        age = float(data["age_s"]) + elapsed
        if not 0 <= age < math.inf:
            return False
        counters = self._counters.model_validate(data["counters"])
        rates = {str(k): float(v) for k, v in dict(data.get("rates") or {}).items()}
        if not all(math.isfinite(v) for v in rates.values()):
            return False
        self._base, self._base_at, self._pending, self._rates = counters, now - age, None, rates
        return True
