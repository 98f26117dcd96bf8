"""A period in the arrival rate, learnt from the recent reads, for the ``docktor`` policy.

Pure and deterministic (numpy over the state's history, nothing remembered): the daemon and the
simulator call it with the same reads and get the same answer.

A load that repeats (a cron job, a producer that flushes every minute) is a forecast the rate's
smoothing cannot make: between two bursts the smoothed rate says "quiet", the replicas of the
last burst go, and the next burst pays their start-up again (burst-every-minute: 81 start-ups in
20 minutes). With the period known, the plan can hold, from each check on, the fewest replicas
that start every message of the *next* period in time, the queue absorbing each burst: a replica
is kept across the gap when the next burst needs it before a new one would be ready, and the
count follows the work of a whole period rather than each burst's peak.

**Detection** (:func:`detect`): the reads of the last :data:`WINDOW` seconds, on a grid of one
check interval (or coarser, at most :data:`MAX_POINTS` steps), are compared with themselves one lag earlier: the last lag against the one
before (so the history must hold two periods and a read). The share of those two lags'
variance the lag leaves unexplained, ``mean((x_t - x_{t-L})^2) / (2 var(x))``, is 0 for a clean
repetition and about 1 for noise, a random walk or a trend (the factor 2: two independent noisy
reads differ by twice the variance). The shortest lag whose fit is at least :data:`FIT_MIN` and a
local best wins. Holding through the period is used only where it is cheaper than following
each burst (:func:`worth_holding`).

**Fall-back** (:meth:`Pattern.holds`): the newest read must lie within the pattern's error band
of what the period forecast for it; the first read outside it (a burst bigger, earlier or
missing) hands the decision back to the reactive plan at that very check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from docktor.agent.core.deadlines import Capacity, Demand, started_by

#: how far back the period is looked for, seconds (the state keeps an hour at 5 s checks)
WINDOW = 1800.0
#: the most grid steps looked through: the detection's work per tick is about MAX_POINTS^2 / 2
MAX_POINTS = 360
#: periods shorter than this are the reactive plan's business
MIN_PERIOD = 20.0
#: the least share of the recent variance the period must explain
FIT_MIN = 0.95
#: a load this flat (coefficient of variation over the window) has no period worth following
MIN_CV = 0.1
#: the fall-back band around the forecast: this many residual standard deviations, plus this share
BAND_SIGMAS = 4.0
BAND_SHARE = 0.2
#: a period is followed on its forecast (:func:`follow`) only with a fit at least this good
FOLLOW_FIT = 0.95
#: a followed burst's replicas start this many checks before the last check that has them ready
EARLY_CHECKS = 2


@dataclass(frozen=True)
class Pattern:
    """A period found in the reads, and the rates it forecasts from now on."""

    #: seconds; a whole number of grid steps
    period: float
    #: the grid step (one check interval), seconds
    dt: float
    #: ``profile[k]``: the rate forecast over (now + k dt, now + (k+1) dt], for one period; then it repeats
    profile: np.ndarray
    #: share of the window's variance the period explains (1: exact repetition)
    fit: float
    #: residual standard deviation of a read against the same phase one period earlier, msg/s
    noise: float
    #: what the period forecast for the newest read (the same phase one and two periods ago)
    expected_now: tuple[float, float]
    #: whether the period before those two repeats too (three periods seen, not two)
    confirmed: bool = False

    def holds(self, rate_now: float) -> bool:
        """Whether the newest read is what the period said it would be (else: fall back)."""
        lo, hi = self.expected_now
        band = BAND_SIGMAS * self.noise + BAND_SHARE * max(hi, 1e-9)
        return lo - band <= rate_now <= hi + band

    def arrivals(self, v: np.ndarray) -> np.ndarray:
        """Messages forecast to arrive between now and each of ``v`` seconds from now."""
        per_period = float(self.profile.sum()) * self.dt
        cum = np.concatenate(([0.0], np.cumsum(self.profile) * self.dt))
        edges = np.arange(cum.size, dtype=float) * self.dt
        v = np.maximum(v, 0.0)
        whole = np.floor(v / self.period)
        out: np.ndarray = whole * per_period + np.interp(v - whole * self.period, edges, cum)
        return out


def grid(times: np.ndarray, rates: np.ndarray, now: float, dt: float, window: float) -> np.ndarray:
    """The mean arrival rate over each step of a grid of ``dt`` ending at ``now`` (oldest first), as
    far back as the reads and ``window`` go. ``rates[k]`` is the rate over ``(times[k-1], times[k]]``,
    so the arrivals are piecewise linear between reads and a step's mean is exact for reads of any
    spacing (a tick a little late, checks shorter than the step)."""
    if times.size < 2 or not dt > 0:
        return np.zeros(0)
    n = int(min(window, now - float(times[0])) // dt)
    if n <= 0:
        return np.zeros(0)
    arrived = np.concatenate(([0.0], np.cumsum(rates[1:] * np.diff(times))))
    edges = now - dt * np.arange(n, -1, -1, dtype=float)
    out: np.ndarray = np.diff(np.interp(edges, times, arrived)) / dt
    return out


def _unexplained(x: np.ndarray, lag: int, floor: float) -> float:
    """``mean((x_t - x_{t-lag})^2) / (2 var)`` over the last lag of ``x`` against the one before;
    infinite where those two lags are flatter than ``floor`` (a standard deviation): two quiet
    stretches between bursts match each other, and say nothing of the bursts."""
    recent = x[-2 * lag :]
    var = float(recent.var())
    if var <= floor**2 or var <= 0:
        return math.inf
    a, b = recent[lag:], recent[:-lag]
    return float(np.mean((a - b) ** 2)) / (2.0 * var)


def detect(times: np.ndarray, rates: np.ndarray, now: float, dt: float) -> Pattern | None:
    """The period of the recent reads, or None when there is none to trust (see the module's doc).

    ``dt`` is the check interval; the grid is never finer than :data:`WINDOW` / :data:`MAX_POINTS`
    (at 1 s checks, 5 s steps), so a tick's work stays bounded whatever the interval."""
    dt = max(dt, WINDOW / MAX_POINTS)
    x = grid(times, rates, now, dt, WINDOW)
    lo = max(2, math.ceil(MIN_PERIOD / dt - 1e-9))
    hi = (x.size - 1) // 2
    if hi < lo:
        return None
    mean = float(x.mean())
    if mean <= 0 or float(x.std()) < MIN_CV * mean:
        return None
    scores = np.array([_unexplained(x, lag, MIN_CV * mean) for lag in range(lo, hi + 1)])
    lag = 0
    for i, s in enumerate(scores):
        if s > 1 - FIT_MIN:
            continue
        # the first good lag that is a local best: a multiple of the period fits as well, not better
        if i + 1 < scores.size and scores[i + 1] < s:
            continue
        lag = lo + i
        break
    if not lag:
        return None
    last, before = x[-lag:], x[-2 * lag : -lag]
    resid = last - before
    back = (float(x[-lag - 1]), float(x[-2 * lag - 1]))
    expected_now = (min(back), max(back))
    return Pattern(
        period=lag * dt,
        dt=dt,
        profile=np.maximum(last, before),
        fit=1.0 - float(scores[lag - lo]),
        noise=float(np.sqrt(np.mean(resid**2) / 2.0)),
        expected_now=expected_now,
        confirmed=x.size >= 3 * lag and _unexplained(x[:-lag], lag, MIN_CV * mean) <= 1 - FIT_MIN,
    )


def demand(
    pattern: Pattern, queue_at: np.ndarray, queue_due: np.ndarray, slo: float, horizon: float, marks: list[float]
) -> Demand:
    """The queued messages plus the period's forecast arrivals, due ``slo`` after each arrives, up to ``horizon``."""
    pts = {float(u) for u in queue_at if 0 <= u <= horizon}
    pts.update(float(u) for u in marks if 0 <= u <= horizon)
    pts.update(float(u) for u in np.arange(slo, horizon, pattern.dt))
    # arrival steps too: what arrived by each is what the replicas may have started by then
    pts.update(float(u) for u in np.arange(0.0, horizon, pattern.dt))
    pts.add(horizon)
    at = np.array(sorted(pts), dtype=float)
    queued = (
        np.interp(at, queue_at, queue_due, left=0.0, right=float(queue_due[-1])) if queue_at.size else np.zeros_like(at)
    )
    return Demand(at, queued + pattern.arrivals(at - slo))


def worth_holding(pattern: Pattern, n: int, mu: float, startup: float) -> bool:
    """Whether holding ``n`` replicas through a whole period costs less than following each burst.

    Followed burst by burst, a period costs about its work plus a start-up for every replica
    started for its peak and removed after (each burst's replicas gone before the next one);
    held, it costs ``n`` for the whole period. A tall, narrow burst is cheaper followed (it
    would hold many replicas idle for most of the period); a burst whose replicas the gap would
    only start again is cheaper held.
    """
    need = np.ceil(pattern.profile / mu - 1e-9)
    followed = float(pattern.profile.sum()) * pattern.dt / mu + startup * float(need.max() - need.min())
    return n * pattern.period <= followed


def fewest_held(
    cap: Capacity, ahead: Demand, pattern: Pattern, queued: float, ceiling: int, later: np.ndarray | None = None
) -> tuple[int, bool]:
    """The fewest replicas (up to ``ceiling``) that, held from now, start every message of ``ahead`` in time.

    Unlike :func:`docktor.agent.core.deadlines.fewest_replicas`, whose horizon is a few checks of
    steady load, this one spans a period of gaps and bursts, so capacity idle before a burst
    arrives must not count toward it: the messages started by ``u`` are at most those arrived by
    then, ``min(capacity by u, min over s <= u of (arrived by s + capacity over [s, u]))``
    (a fluid FIFO queue).
    ``later[n, i]``: capacity the next checks will add by ``ahead.at[i]`` if ``n`` are set now
    (:func:`just_in_time`). Returns (count, feasible); checkpoints no count can meet are dropped,
    as there.
    """
    at = ahead.at
    arrived = queued + pattern.arrivals(at)
    counts = np.arange(ceiling + 1, dtype=float)
    capacity = started_by(cap, at, counts)  # (n, at)
    if later is not None:
        capacity = capacity + later
    # never more than the capacity (s = 0), nor than arrived by s plus the capacity after s
    slack = np.minimum.accumulate(np.minimum(arrived[None, :] - capacity, 0.0), axis=1)
    served = capacity + slack
    ok = served >= ahead.due[None, :] - 1e-9
    reachable = ok[-1]
    if not reachable.any():
        return ceiling, False
    good = ok[:, reachable].all(axis=1)
    return int(np.argmax(good)), bool(reachable.all())


def just_in_time(
    cap: Capacity, ahead: Demand, pattern: Pattern, queued: float, n: int, ceiling: int, step: float
) -> int:
    """A scale-out to ``n`` for a foreseen burst, put off while the next check can still make it.

    A replica started before it is needed costs its wait as well as its start-up. The load being
    foreseen, the next check will see the same need, so a scale-out waits while ``n`` set at the
    next check (serving ``startup`` later) still starts every message in time; never fewer than
    are running.
    """
    counts = np.arange(ceiling + 1, dtype=float)
    added = np.maximum(float(n) - counts, 0.0)[:, None] * np.maximum(ahead.at[None, :] - step - cap.startup, 0.0)
    wait, ok = fewest_held(cap, ahead, pattern, queued, ceiling, cap.mu * added)
    return max(cap.running, wait) if ok and wait < n else n


def may_follow(pattern: Pattern, slo: float, step: float, startup: float) -> bool:
    """Whether a period may be followed on its forecast at all (else it is left to the reactive plan).

    Following sizes on the forecast alone, with the reactive margins down, so it needs margin of
    its own for what the forecast does not see:

    - **a period seen three times** (two alone matched by chance on random spikes, spikes@8),
      fitting the recent reads at least :data:`FOLLOW_FIT` (today the detection's own
      :data:`FIT_MIN`, kept apart to be raised on its own; a stricter value was not tried);
    - **checks that leave room**: a burst's replicas start :data:`EARLY_CHECKS` checks before the
      last check that still has them ready, and a burst the forecast missed must still be caught
      by the reactive plan a check after it shows; so ``EARLY_CHECKS + 1`` checks and a start-up
      must fit in the wait budget (at the default 5 s checks, 10 s start-up and 27 s budget, 25 s;
      at 15 s or 30 s checks, or a 30 s start-up, they do not, and the period is not followed);
    - **a start-up worth saving**: the margin holds each burst's replicas ``EARLY_CHECKS`` checks
      early; with a start-up shorter than that (2 s), the reactive plan has them ready sooner
      after a burst shows than the margin costs (bursts-b@8 at a 2 s start-up: 23,411 replica-s
      reacting, 24,971 followed).
    """
    room = (EARLY_CHECKS + 1) * step + startup <= slo
    return pattern.confirmed and pattern.fit >= FOLLOW_FIT and room and EARLY_CHECKS * step <= startup


def follow(
    cap: Capacity,
    pattern: Pattern,
    queue_at: np.ndarray,
    queue_due: np.ndarray,
    queued: float,
    slo: float,
    horizon: float,
    marks: list[float],
    ceiling: int,
    step: float,
    seen: int = 0,
) -> int | None:
    """The count for a period that is cheaper followed than held (:func:`worth_holding` said no,
    :func:`may_follow` yes).

    Each burst is foreseen, so the plan sizes on the forecast rather than on today's and the
    smoothed rate, and looks twice the usual horizon ahead: from the check that must start a
    burst's replicas (a check and a start-up before it arrives) that spans the deadlines of the
    whole burst. ``n`` is the fewest that, held from now, start all of it in time.

    - **Scale-out early enough.** A replica started before it is needed costs its wait as well as
      its start-up, so a scale-out waits, but only while ``n`` set :data:`EARLY_CHECKS` checks
      after the next one would still be in time: the burst's replicas are ready when it arrives
      with a check to spare for a burst a little early or large (cv 2, a coarse grid), and fewer
      of them serve it longer than replicas started once it is seen.
    - **Never below what is seen.** ``seen`` is the count the queue and the current rate need
      until the next check (the reactive plan's first check): a burst earlier or larger than
      forecast, still inside the fall-back band of :meth:`Pattern.holds`, is sized on its
      backlog at once, and then no scale-out waits.
    - **Scale-in to ``n``, no further.** After a burst, what the forecast needs, not a smoothed
      rate the burst left behind: a quiet stretch's count. A replica that ``n`` still counts (the
      next burst is within the look-ahead, or one still starting for this one) stays.

    None when the forecast cannot be met: the reactive plan takes over.
    """
    ahead = demand(pattern, queue_at, queue_due, slo, 2 * horizon, marks)
    n, ok = fewest_held(cap, ahead, pattern, queued, ceiling)
    if not ok:
        return None
    if seen >= n:
        return seen
    if n < cap.running:
        return max(n, seen)
    return max(seen, just_in_time(cap, ahead, pattern, queued, n, ceiling, (EARLY_CHECKS + 1) * step))
