"""Live wait-SLO attainment: the share of messages started within ``target_wait``, estimated
from what each tick reads (docs/policy.md, "Did the promise hold: live attainment").

Nothing here sees a message. Per tick the source gives ``queue.oldest_age`` (how long the
message a worker would be handed next has waited), ``queue.rate_out`` and ``queue.rate_in`` since
the previous read, and the executor ``replicas.running``. In a FIFO queue the message a worker
starts at time ``t`` *is* the oldest one waiting, so it waited ``oldest_age(t)``: a start is late
exactly when the age at that moment exceeds ``target_wait``. Between two ticks ``t0 < t1``:

* messages started ≈ ``rate_out × (t1 − t0)``: the interval's weight in the windows;
* their late share is 0 when the age was within the target at both ticks. Otherwise, with the
  arrival curve ``N(t)`` (the ``rate_in`` of the ticks since the oldest waiting message arrived),
  the starts are followed one by one: the workers take messages in arrival order at a steady
  rate (what the interval started, when the queue stayed busy; when it emptied on the way, the
  per-replica rate last sustained times the replicas running, at least enough to empty it), and
  a start is late when its time minus its message's arrival exceeds the target. Without the
  curve, the age is taken to move in a straight line from ``a0`` to ``a1`` (:func:`late_share`).

The error comes only from intervals in which the age crosses the target; it is bounded by the
share of the window's starts made in them and in practice a small part of it (the tests and
docs give figures). A tick without ``queue.oldest_age`` or ``queue.rate_out`` (a failed read,
the first read, a rate reset), or an interval longer than ``max_gap``, is a *gap*: nothing is
counted for it, never zeros. A window in which nothing was counted has no attainment, with the
reason. Pure: no I/O, no clock; the caller passes the times (the daemon's monotonic clock).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the windows reported, in seconds, and their names in the record and the metrics
WINDOWS: tuple[tuple[str, float], ...] = (("5m", 300.0), ("60m", 3600.0))
#: how far back intervals are kept: the longest window
HORIZON_S = max(seconds for _, seconds in WINDOWS)
#: the reason a source that cannot tell the age gives no attainment
NO_AGE_SOURCE = "no queue.oldest_age from this source"


def max_gap_for(check_interval: float) -> float:
    """The longest tick interval still counted: one missed tick (a slow read) is bridged, a
    longer silence (an outage, a restart) is a gap."""
    return max(5.0, 2.5 * check_interval)


@dataclass(frozen=True)
class Span:
    """What was counted for ``(end - length, end]``: messages started and, of those, late."""

    end: float
    length: float
    started: float
    late: float


def late_share(a0: float, a1: float, target: float) -> float:
    """The share of an interval during which an age moving in a straight line from ``a0`` to
    ``a1`` exceeds ``target``: the late share of the starts made in it (even starts)."""
    if a0 <= target and a1 <= target:
        return 0.0
    if a0 > target and a1 > target:
        return 1.0
    crossing = (target - a0) / (a1 - a0)  # where the line meets the target, 0..1 into the interval
    return 1.0 - crossing if a1 > a0 else crossing


@dataclass(frozen=True)
class Share:
    """One window's attainment: ``value`` (0..1, None when nothing was counted, with ``why``),
    the messages counted as started, and the seconds of the window that had samples."""

    value: float | None
    started: float
    measured_s: float
    why: str | None = None


class Arrivals:
    """Cumulative arrivals over time, from ``queue.rate_in`` per tick: a piecewise-linear curve
    ``N(t)``, kept for the last ``horizon`` seconds, restarted after a gap."""

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.points: deque[tuple[float, float]] = deque()

    def add(self, t0: float, t1: float, rate: float | None) -> None:
        if rate is None:
            self.points.clear()
            return
        if not self.points or abs(self.points[-1][0] - t0) > 1e-9:
            self.points.clear()
            self.points.append((t0, 0.0))
        self.points.append((t1, self.points[-1][1] + max(0.0, rate) * (t1 - t0)))
        while len(self.points) > 2 and self.points[1][0] <= t1 - self.horizon:
            self.points.popleft()

    def covers(self, t0: float, t1: float) -> bool:
        return bool(self.points) and self.points[0][0] <= t0 and t1 <= self.points[-1][0] + 1e-9

    def count(self, t: float) -> float:
        """``N(t)`` (within the curve)."""
        pts = self.points
        i = bisect_left(pts, (t, -math.inf))
        if i <= 0:
            return pts[0][1]
        if i >= len(pts):
            return pts[-1][1]
        (ta, na), (tb, nb) = pts[i - 1], pts[i]
        return na + (nb - na) * (t - ta) / (tb - ta)

    def time_of(self, n: float) -> float:
        """The first ``t`` with ``N(t) >= n``: when the ``n``-th message arrived."""
        pts = self.points
        lo, hi = 0, len(pts) - 1
        if n <= pts[0][1]:
            return pts[0][0]
        if n >= pts[-1][1]:
            return pts[-1][0]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if pts[mid][1] >= n:
                hi = mid
            else:
                lo = mid
        (ta, na), (tb, nb) = pts[lo], pts[hi]
        return ta + (tb - ta) * (n - na) / (nb - na)


#: sub-steps per tick interval when the starts are followed through the arrival curve
STEPS = 64


class AttainmentWindow:
    """The per-tick samples of one service, folded into counted spans for the last hour."""

    def __init__(self, target_wait: float, *, max_gap: float, horizon: float = HORIZON_S) -> None:
        self.target_wait = target_wait
        self.max_gap = max_gap
        self.horizon = horizon
        self.spans: deque[Span] = deque()
        self.arrivals = Arrivals(horizon)
        #: starts per second the workers last sustained through a whole busy interval, in all and
        #: per running replica (what the next interval's replicas can do when the queue empties)
        self.capacity: float | None = None
        self.per_replica: float | None = None
        #: the previous tick's time, oldest age and running replicas (None: it had none)
        self._last: tuple[float, float | None, float | None] | None = None

    def observe(self, now: float, observations: Mapping[str, float]) -> None:
        """One tick's reading: ``queue.oldest_age``, ``queue.rate_out`` and ``queue.rate_in``
        (the first two needed, the third sharpens the estimate; an absent one is a gap)."""
        age, rate = observations.get("queue.oldest_age"), observations.get("queue.rate_out")
        replicas = observations.get("replicas.running")
        last, self._last = self._last, (now, None if age is None else float(age), replicas)
        if last is None:
            return
        t0, a0, before = last
        length = now - t0
        if length <= 0 or length > self.max_gap:
            self.arrivals.points.clear()  # the arrivals in between are unknown
            return
        self.arrivals.add(t0, now, observations.get("queue.rate_in"))
        if age is None or a0 is None or rate is None:
            return
        started = max(0.0, float(rate)) * length
        share = self._late_share(t0, a0, now, float(age), replicas)
        self.spans.append(Span(now, length, started, started * share))
        if a0 > 0 and age > 0 and rate > 0:  # messages waited throughout: the workers' capacity
            self.capacity = float(rate)
            if replicas and before:
                self.per_replica = self.capacity / ((replicas + before) / 2)
        while self.spans and self.spans[0].end <= now - self.horizon:
            self.spans.popleft()

    def _late_share(self, t0: float, a0: float, t1: float, a1: float, replicas: float | None) -> float:
        """The late share of the starts in ``(t0, t1]``. With the arrival curve known back to the
        oldest message: the workers start messages in arrival order at a steady rate while any
        wait, so each start's wait is its time minus its message's arrival; otherwise the age's
        straight line (:func:`late_share`)."""
        target, n = self.target_wait, self.arrivals
        p0, p1 = t0 - a0, t1 - a1  # the arrival times of the next message at each end
        if a0 <= target and a1 <= target:
            return 0.0
        if not n.covers(p0, t1) or p1 < p0:
            return late_share(a0, a1, target)
        n0, n1 = n.count(p0), n.count(p1)
        started = n1 - n0
        if started <= 0:
            return late_share(a0, a1, target)
        if a1 > 0:  # busy to the end: the rate is what was started over the whole interval
            rate = started / (t1 - t0)
        elif self.per_replica is not None and replicas:
            # emptied on the way: at what the replicas running now sustained before (a scale-up
            # just before a drain drains it faster), or just fast enough
            rate = max(self.per_replica * replicas, started / (t1 - t0))
        else:
            rate = max(self.capacity or 0.0, started / (t1 - t0))
        # busy until the starts catch up with the arrivals, then every message starts on arrival
        late = 0.0
        step = (t1 - t0) / STEPS
        for i in range(STEPS):
            t = t0 + (i + 0.5) * step
            k = n0 + rate * (t - t0)
            if k >= n1:
                break
            if t - n.time_of(k) > target:
                late += rate * step
        return min(1.0, late / started)

    def share(self, now: float, window: float) -> Share:
        """Attainment over ``(now - window, now]``; a span partly inside counts in proportion."""
        started = late = measured = 0.0
        for span in reversed(self.spans):
            if span.end <= now - window:
                break
            inside = min(span.length, span.end - (now - window)) / span.length
            started += span.started * inside
            late += span.late * inside
            measured += span.length * inside
        if measured == 0:
            return Share(None, 0.0, 0.0, "no samples yet" if not self.spans else "no samples in this window")
        if started <= 0:
            return Share(None, 0.0, measured, "no message started in this window")
        return Share(max(0.0, 1.0 - late / started), started, measured)

    def summary(self, now: float) -> dict[str, Any]:
        """The record's ``slo`` field: ``target_wait_s``, and per window ``attainment_<w>`` (None
        with a ``why`` when it cannot be told), ``started_<w>`` and ``measured_<w>_s``."""
        out: dict[str, Any] = {"target_wait_s": self.target_wait}
        whys = []
        for name, seconds in WINDOWS:
            s = self.share(now, seconds)
            out[f"attainment_{name}"] = None if s.value is None else round(s.value, 5)
            out[f"started_{name}"] = round(s.started)
            out[f"measured_{name}_s"] = round(s.measured_s, 1)
            if s.why is not None:
                whys.append(f"{name}: {s.why}")
        if whys:
            out["why"] = "; ".join(whys)
        return out

    # ------------------------------------------------------------------ the state file

    def dump(self, to_wall: float, *, bucket: float = 60.0) -> dict[str, Any]:
        """The spans as a state-file piece, merged into ``bucket``-second spans (a 60 min window
        is then at most ~60 rows) and their times moved to the wall clock by ``to_wall``."""
        rows: list[list[float]] = []  # [end, length, started, late], wall clock
        for span in self.spans:
            end = span.end + to_wall
            prev = rows[-1] if rows else None
            # merged only with the span right before it (no gap between) in the same bucket
            if prev is not None and abs(end - span.length - prev[0]) < 1e-3 and end // bucket == prev[0] // bucket:
                prev[0], prev[1] = end, prev[1] + span.length
                prev[2] += span.started
                prev[3] += span.late
            else:
                rows.append([end, span.length, span.started, span.late])
        return {"target_wait_s": self.target_wait, "spans": [[round(x, 3) for x in row] for row in rows]}

    def load(self, doc: Mapping[str, Any], to_mono: float, now: float) -> int:
        """Spans a previous daemon saved (``dump``), times moved back by ``to_mono``; only for the
        same ``target_wait`` (ValueError otherwise, or for a row that is not four numbers >= 0).
        Returns how many were kept."""
        if float(doc["target_wait_s"]) != self.target_wait:
            raise ValueError(f"target_wait changed ({doc['target_wait_s']} s -> {self.target_wait:g} s)")
        spans = []
        for row in doc["spans"]:
            end, length, started, late = (float(x) for x in row)
            if not (length > 0 and started >= 0 and 0 <= late <= started + 1e-6):
                raise ValueError(f"{row!r} is not a span")
            end += to_mono
            if now - self.horizon < end <= now:
                spans.append(Span(end, length, started, min(late, started)))
        self.spans = deque(sorted(spans, key=lambda s: s.end))
        return len(spans)
