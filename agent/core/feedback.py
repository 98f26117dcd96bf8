"""The closed loop: the measured age of the oldest message corrects the throughput the policy sizes with.

The ``docktor`` policy sizes with a per-replica throughput ``mu`` measured over the last
minutes (:func:`docktor.agent.core.sizing.estimate_mu`). When the workers get slower (a deploy,
a slower dependency), that window still remembers the faster past for a while, the policy
sizes short, and the queue's head grows older than planned: the promise is broken before the
estimate catches up. ``queue.oldest_age``, read every tick, says it at once.

For each of the last ``INTERVALS`` check intervals with work queued at its start and an age
read at both ends, the current ``mu`` predicts how many queued messages the replicas ready then
started in it (``ready x mu x interval``), hence (the queue is FIFO; the arrival history says
when each queued message came, :func:`docktor.agent.core.deadlines.queue_deadlines`, stretched to
the measured age) how old its head should be at the end. When the measured age is older than
that by more than the tolerance (:func:`tolerance`: twice the largest miss, ahead or behind, of
the intervals before, between ``max(AGE_TOLERANCE_S, AGE_TOLERANCE_SHARE x target_wait)`` and
``AGE_TOLERANCE_CHECKS x interval``), the head moved only as far as fewer starts would take it: their ratio to the prediction is what ``mu`` is
overstated by. The correction is the lowest such ratio, each weighed back toward 1 by
``exp(-age / (DECAY_CHECKS x check_interval))``, and never below ``FLOOR`` (a quarter of what
was measured): bounded, and gone a few ticks after the age stops running ahead (or as soon as
the measured ``mu`` has caught up, since every ratio is taken against the current ``mu``).

It only ever lowers ``mu`` (more replicas): an age behind the prediction is no reason to remove
any. Pure, from ``state.history`` like the rest of the policy, so the simulator runs it as is.
``closed_loop: false`` on a service turns it off (the open loop, as ``docktor bench`` compares).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import deadlines as dl
from docktor.agent.core.derived import Point, pending
from docktor.agent.core.saturation import ready_at

#: the check intervals looked back through
INTERVALS = 20
#: an age older than predicted by less than the larger of the first two is always noise: a
#: reading's second and rounding; a share of the wait target. Up to half the interval may be, since
#: the arrival curve knows one rate per read, so messages that came unevenly inside it (a burst, a
#: producer's batch) and a real queue's age and length read a moment apart move the head by up to
#: that much: where the age has not followed the prediction closely (below), the tolerance is that
AGE_TOLERANCE_S = 1.0
AGE_TOLERANCE_SHARE = 0.05
AGE_TOLERANCE_CHECKS = 0.5
#: the correction never takes mu below this share of its measured value
FLOOR = 0.25
#: a ratio found this many check intervals ago weighs e^-1 of what it did
DECAY_CHECKS = 12.0
#: the tolerance is SPREAD_TIMES the largest miss, ahead or behind, of the last SPREAD_INTERVALS
#: intervals before (at least SPREAD_MIN of them), within the bounds above: a queue whose age has
#: followed the prediction closely shows a slowdown at its first check, one whose age jumps (noise
#: goes both ways, a slowdown one) keeps the half interval
SPREAD_INTERVALS = 12
SPREAD_MIN = 6
SPREAD_TIMES = 2.0


@dataclass(frozen=True)
class Correction:
    """What the closed loop found: ``factor`` multiplies ``mu`` (1: no correction)."""

    factor: float
    #: the interval that set it: the age measured at its end and the age predicted
    observed_age: float = 0.0
    predicted_age: float = 0.0

    def text(self, mu: float) -> str:
        return (f"closed loop: oldest message {self.observed_age:.0f}s old where {self.predicted_age:.0f}s was "
                f"predicted, so {mu * self.factor:.4g}/s per replica, not the {mu:.4g}/s measured")


NONE = Correction(1.0)


def _interval(svc: ServiceConfig, points: Sequence[Point], k: int, mu: float) -> tuple[float, float, float] | None:
    """(ratio of starts observed to predicted, age observed, age predicted) over the interval
    ending at point ``k``, or None where it says nothing (no queue, no ages); the age may be
    ahead of the prediction by any amount, or behind it (ratio 1)."""
    (t0, o0), (t1, o1) = points[k - 1], points[k]
    dt = t1 - t0
    p0 = pending(o0)
    a0, a1 = o0.get("queue.oldest_age"), o1.get("queue.oldest_age")
    if dt <= 0 or p0 is None or p0 <= 0 or a0 is None or a1 is None or a0 <= 0:
        return None
    # the replicas that worked through the interval: ready at its start, and not removed by the
    # scale-in decided at that tick (the count read at its end is after it)
    ready = ready_at(points, k - 1, svc.startup_delay)
    if "replicas.running" in o1:
        ready = min(ready, int(o1["replicas.running"]))
    if ready <= 0:
        return None
    predicted_starts = ready * mu * dt
    # when each queued message arrived (seconds before t0, oldest first), from the arrival history,
    # stretched so that the head is as old as measured
    history = [(t, o["queue.rate_in"]) for t, o in points[:k] if "queue.rate_in" in o]
    if len(history) < 2:
        return None
    times = np.array([t for t, _ in history], dtype=float)
    rates = np.array([r for _, r in history], dtype=float)
    xs, ys = dl.queue_deadlines(p0, times, rates, t0, 0.0)
    if xs.size < 2 or not xs[0] < 0:
        return None
    scale = a0 / -float(xs[0])
    advance = (float(np.interp(min(predicted_starts, p0), ys, xs)) - float(xs[0])) * scale
    predicted = max(0.0, a0 + dt - advance)
    moved = max(0.0, a0 + dt - a1) / scale  # how far the head moved, in the model's seconds
    started = float(np.interp(float(xs[0]) + moved, xs, ys))
    return min(1.0, started / predicted_starts), a1, predicted


def tolerance(svc: ServiceConfig, dt: float, earlier: Sequence[float]) -> float:
    """How far ahead of the prediction an age may be and still be noise, for an interval of
    ``dt`` seconds after intervals whose ages were ``earlier`` seconds ahead of it (behind:
    negative; newest first)."""
    floor = max(AGE_TOLERANCE_S, AGE_TOLERANCE_SHARE * svc.target_wait)
    cap = max(floor, AGE_TOLERANCE_CHECKS * dt)
    recent = earlier[:SPREAD_INTERVALS]
    if len(recent) < SPREAD_MIN:
        return cap
    return min(cap, max(floor, SPREAD_TIMES * max(abs(e) for e in recent)))


def correct(svc: ServiceConfig, points: Sequence[Point], mu: float) -> Correction:
    """The correction of ``mu`` the last intervals' ages call for (``NONE`` when they call for none)."""
    if not svc.closed_loop or mu <= 0 or len(points) < 3:
        return NONE
    now = points[-1][0]
    first = max(2, len(points) - INTERVALS)
    # the intervals the loop corrects from, and before them those that measure the spread (read
    # only for an excess the spread decides on: most ticks have none)
    cache: dict[int, tuple[float, float, float] | None] = {}

    def at(k: int) -> tuple[float, float, float] | None:
        if k not in cache:
            cache[k] = _interval(svc, points, k, mu)
        return cache[k]

    floor = max(AGE_TOLERANCE_S, AGE_TOLERANCE_SHARE * svc.target_wait)
    best = NONE
    for k in range(len(points) - 1, first - 1, -1):
        found = at(k)
        if found is None:
            continue
        ratio, observed, predicted = found
        excess = observed - predicted
        if excess <= floor:
            continue
        earlier = [f[1] - f[2] for j in range(k - 1, max(0, first - 1 - SPREAD_INTERVALS), -1) if (f := at(j)) is not None]
        if excess <= tolerance(svc, points[k][0] - points[k - 1][0], earlier):
            continue
        weight = math.exp(-(now - points[k][0]) / (DECAY_CHECKS * svc.check_interval))
        factor = max(FLOOR, 1.0 - (1.0 - ratio) * weight)
        if factor < best.factor:
            best = Correction(factor, observed, predicted)
    return best
