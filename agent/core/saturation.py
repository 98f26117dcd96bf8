""""Scaling is not helping": scale-ups that did not raise the output rate, and the hold they call for.

A saturated database behind the workers caps what they complete together: past a point every
replica added only splits the same output, the backlog grows anyway, and a queue-driven
autoscaler climbs to its maximum and makes the database worse. This module notices it from the
observations the daemon keeps (``state.history``) and nothing else, so it is pure and the
simulator runs the same code.

**A scale-up's verdict.** A scale-up is seen where ``replicas.running`` grows between two ticks.
Its replicas are ready ``startup_delay`` later, so it is judged on the first interval that starts
after that (``rate_out`` at the end of it), against the interval just before it was seen:

- expected gain: the replicas ready then minus those ready before, times the per-replica rate
  before (``rate_out`` / ready replicas);
- observed gain: ``rate_out`` after minus ``rate_out`` before.

Only a *saturated* pair is conclusive: work waited in the queue through both intervals
(``queue.pending`` > 0 at both ends), so ``rate_out`` measured capacity, not demand. A queue that
emptied after the scale-up is a scale-up that worked. Noise: a rate counted over an interval of
``check_interval`` seconds is a count, so its standard deviation is about
``sqrt(rate / check_interval)``; a scale-up whose expected gain is under ``NOISE_Z`` standard
deviations of the difference is inconclusive, neither effective nor not. A conclusive scale-up
is *ineffective* when its observed gain is under ``EFFECTIVE_SHARE`` of the expected.

**Evidence.** A verdict is *clean* when the replica count was steady over both intervals it
compares and the start-up before each (every replica counted was ready for the whole interval, so
the per-replica rate before is what those replicas did, not what some of them did with others
starting halfway), did not change again between the scale-up and its judgment, and the output fell
short of the expected gain by ``NOISE_Z`` standard deviations of a difference of two intervals,
measured: the spread of ``rate_out`` over at least ``SPREAD_MIN`` saturated intervals at the
count before (never less than counting noise). Service times that vary a lot spread the output
far wider than counting noise (at cv 2, sawtooth's single verdicts read "-20/s where +53/s was
expected" with every replica busy); a verdict at the edge of the noise is one of two. An
ineffective verdict whose span saw the count fall again (a scale-in, or the policy's next step
down) is no evidence at all and is dropped: the output it measured is not the scale-up's (on
burst-every-minute at a 2 s start-up, 2 -> 4 -> 5 -> 4 within 15 s read as "+45/s where +157.6/s
was expected" while every replica was busy).

**Not helping.** The hold starts with the first ineffective verdict that is clean and whose
output stayed *flat* (it did not fall by more than the noise): a limit splits the same output
among more replicas, whereas a slowdown that came with a scale-up (a deploy, a cold cache) makes
the output fall. Otherwise it takes ``STREAK`` ineffective verdicts in a row (one alone can be a
slowdown or a verdict the count's changes muddled). Then the policy's scale-ups are held at the
current count, with the reason, and ``scaling.ineffective`` reads 1. Never a scale-in: the signal
only withholds replicas, whatever the policy's own scale-in does is untouched. While one
scale-up is ineffective and another is not yet measured, further scale-ups wait for its verdict.

**Resume.** After ``hold_s`` without a new verdict (doubled for each probe that failed too),
a probe is added: the fewest replicas whose gain a verdict can tell from noise; when it (or any
later scale-up) adds what it should, the streak ends and scaling is free again. One case needs no
probe: replicas held past the count the limit was measured with (*spare*), while the output stays
at the plateau the hold began on. A lifted limit then shows by itself (the mean output over
``lift_window`` rises by half of what the spare replicas could add, a margin the mean can tell
from noise) and ends the hold, so no probe raises the peak. That is only trusted while the
output holds the plateau: when it falls below it (the policy scaled in below the count measured,
or the workers slowed down, which more replicas would help), the probes come back; and even on
the plateau a probe comes once ``MAX_QUIET_S`` pass without a verdict, so a wrong verdict costs at
most one probe period, never the rest of the trace. Below the count the first ineffective
scale-up started from, scale-ups worked, so they are never held (after the load fell and the
policy scaled in, it may come back up to there).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.derived import Point, pending, time_of
from docktor.agent.core.proposal import Proposal

#: the share of the expected throughput gain a scale-up must add to count as effective
EFFECTIVE_SHARE = 0.5
#: conclusive ineffective scale-ups in a row that make "not helping"
STREAK = 2
#: standard deviations of counting noise an expected gain must exceed to be judged
NOISE_Z = 3.0
#: how far back scale-ups are looked for, seconds
MEMORY_S = 1800.0
#: the least hold before a probe, seconds (longer with long start-ups: HOLD_CYCLES x (start-up + check))
HOLD_MIN_S = 120.0
HOLD_CYCLES = 4.0
#: the least span whose mean output the spare-replica test compares, seconds (longer with long
#: checks: LIFT_CHECKS check intervals)
LIFT_MIN_S = 30.0
LIFT_CHECKS = 6
#: the fewest intervals at one count whose spread of ``rate_out`` a single-verdict hold is measured against
SPREAD_MIN = 8
#: the longest a hold goes without a probe, seconds (the longest probe wait)
MAX_QUIET_S = MEMORY_S / 2



@dataclass(frozen=True)
class Verdict:
    """One judged scale-up."""

    seen_at: float  # the tick that first saw the new count
    judged_at: float  # the end of the interval it was judged on
    ready_before: int
    ready_after: int
    rate_before: float  # rate_out before, messages/s
    expected_gain: float  # messages/s
    observed_gain: float
    effective: bool
    #: the output did not fall by more than the noise: a limit's signature, not a slowdown's
    flat: bool = True
    #: the count was steady over both intervals and the start-ups before them (see the module's doc)
    clean: bool = False


@dataclass(frozen=True)
class Saturation:
    """What the history says of the recent scale-ups."""

    verdicts: tuple[Verdict, ...]  # conclusive ones, oldest first
    #: a scale-up seen whose replicas have not been measured yet
    unverified: bool
    #: when the latest scale-up was seen (judged or not)
    last_up_at: float | None = None
    #: the spare-replica test: None while it cannot tell (or need not), else whether the output rose
    lifted: bool | None = None

    @property
    def streak(self) -> tuple[Verdict, ...]:
        """The trailing run of ineffective verdicts."""
        k = len(self.verdicts)
        while k > 0 and not self.verdicts[k - 1].effective:
            k -= 1
        return self.verdicts[k:]

    @property
    def start(self) -> Verdict | None:
        """The verdict the hold began with: the streak's first clean flat one, or its ``STREAK``-th."""
        return hold_start(self.streak)

    @property
    def ineffective(self) -> bool:
        return self.start is not None

    @property
    def suspect(self) -> bool:
        """The latest verdict was ineffective, but that is not yet a hold."""
        return bool(self.streak) and not self.ineffective


def hold_start(streak: Sequence[Verdict]) -> Verdict | None:
    for i, v in enumerate(streak):
        if (v.flat and v.clean) or i + 1 >= STREAK:
            return v
    return None


def ready_at(points: Sequence[Point], k: int, startup: float) -> int:
    """Replicas surely ready at point k: the fewest running seen since ``startup`` before it."""
    t = points[k][0]
    low = math.inf
    for j in range(k, -1, -1):
        running = points[j][1].get("replicas.running")
        if running is not None:
            low = min(low, running)
        if points[j][0] <= t - startup:
            break
    return 0 if low == math.inf else int(low)


def _steady(points: Sequence[Point], first: int, last: int, startup: float) -> bool:
    """The replica count was the same at every point from the last one at least ``startup``
    before point ``first`` through point ``last``: every replica counted over the interval
    (``first``, ``last``] was ready through all of it, and none came or went."""
    t0 = points[first][0] - startup
    j = first
    while j > 0 and points[j][0] > t0:
        j -= 1
    counts = {points[i][1].get("replicas.running") for i in range(j, last + 1)}
    return len(counts) == 1 and None not in counts


def _spread(points: Sequence[Point], before: int, startup: float) -> float | None:
    """The standard deviation of ``rate_out`` over the saturated intervals just before point
    ``before`` (it included) with the count it had, every replica ready; None with fewer than
    ``SPREAD_MIN``. Counting noise alone is ``sqrt(rate / check_interval)``; workers whose service
    times vary more than a Poisson process's (or share a noisy downstream) spread it wider."""
    count = points[before][1].get("replicas.running")
    rates: list[float] = []
    j = before
    while j >= 1 and points[j][1].get("replicas.running") == count and _steady(points, j - 1, j, startup):
        rate = points[j][1].get("queue.rate_out")
        if rate is not None and _saturated(points, j):
            rates.append(rate)
        j -= 1
    if len(rates) < SPREAD_MIN:
        return None
    mean = sum(rates) / len(rates)
    return math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1))


def _saturated(points: Sequence[Point], k: int) -> bool:
    """Work waited in the queue through the interval ending at point k."""
    if k < 1:
        return False
    p0, p1 = pending(points[k - 1][1]), pending(points[k][1])
    return p0 is not None and p1 is not None and p0 > 0 and p1 > 0


def assess(svc: ServiceConfig, points: Sequence[Point]) -> Saturation:
    """Judge the scale-ups of the last ``MEMORY_S`` seconds of ``points`` (oldest first, the
    current observations last)."""
    if len(points) < 3:
        return Saturation((), False)
    now = points[-1][0]
    lag, step = svc.startup_delay, svc.check_interval
    verdicts: list[Verdict] = []
    unverified = False
    last_up_at: float | None = None
    # Every tick runs this over up to MEMORY_S of history (an hour of 1 s ticks is 1,800 points):
    # find the window by bisection and the scale-ups in one pass over the counts, not a Python
    # loop over every point's dict (the rules policy's decisions ran 5.7x slower with it).
    lo = max(2, bisect.bisect_left(points, now - MEMORY_S, key=time_of))
    counts = [o.get("replicas.running") for _, o in points[lo - 1 :]]
    ups = [(lo + i, b) for i, (a, b) in enumerate(zip(counts, counts[1:])) if a is not None and b is not None and b > a]
    for k, cur in ups:
        seen_at = last_up_at = points[k][0]
        # the interval before: ending at k-1, with the replicas ready then
        before = k - 1
        rate_before = points[before][1].get("queue.rate_out")
        ready_before = ready_at(points, before, lag)
        if rate_before is None or ready_before <= 0 or not _saturated(points, before):
            continue
        # the first interval that starts once the new replicas are ready
        after = next((j for j in range(k + 1, len(points)) if points[j - 1][0] >= seen_at + lag - 1e-9), None)
        if after is None:
            unverified = True
            continue
        rate_after = points[after][1].get("queue.rate_out")
        ready_after = ready_at(points, after, lag)
        if rate_after is None:
            continue
        fell = any(points[j][1].get("replicas.running", cur) < points[j - 1][1].get("replicas.running", cur)
                   for j in range(k + 1, after + 1))
        # steady from the scale-up to its judgment covers the interval after and its start-up too
        clean = _steady(points, before - 1, before, lag) and _steady(points, k, after, 0.0)
        expected = (ready_after - ready_before) * rate_before / ready_before
        observed = rate_after - rate_before
        if clean:
            # and it fell short by more than the output's own spread at the count before could
            spread = _spread(points, before, lag)
            floor = math.sqrt(rate_before / step)
            clean = spread is not None and expected - observed >= NOISE_Z * math.sqrt(2) * max(spread, floor)
        p_after = pending(points[after][1])
        if p_after is not None and p_after <= 0:
            # the queue emptied: the replicas did what was needed
            verdicts.append(Verdict(seen_at, points[after][0], ready_before, ready_after, rate_before, expected, observed,
                                    True, True, clean))
            continue
        if not _saturated(points, after) or expected <= 0:
            continue
        noise = NOISE_Z * math.sqrt((rate_before + rate_after) / step)
        if expected < noise:
            continue
        effective = observed >= EFFECTIVE_SHARE * expected
        if not effective and fell:
            continue  # the count fell again before it was judged: what was measured is not this scale-up
        verdicts.append(Verdict(seen_at, points[after][0], ready_before, ready_after, rate_before, expected, observed,
                                effective, observed >= -noise, clean))
    verdicts.sort(key=lambda v: v.judged_at)
    sat = Saturation(tuple(verdicts), unverified, last_up_at)
    start = sat.start
    if start is None:
        return sat
    return Saturation(sat.verdicts, unverified, last_up_at, _lifted(svc, points, start))


def lift_window(svc: ServiceConfig) -> float:
    """The span whose mean output the spare-replica test compares."""
    return max(LIFT_MIN_S, LIFT_CHECKS * svc.check_interval)


def _mean_rate(points: Sequence[Point], t0: float, t1: float) -> tuple[float, int] | None:
    """The mean ``rate_out`` of the saturated intervals ending in (t0, t1], and how many."""
    rates = [o["queue.rate_out"] for k, (t, o) in enumerate(points)
             if t0 < t <= t1 and "queue.rate_out" in o and _saturated(points, k)]
    return (sum(rates) / len(rates), len(rates)) if len(rates) >= 3 else None


def _lifted(svc: ServiceConfig, points: Sequence[Point], start: Verdict) -> bool | None:
    """The spare-replica test (see the module's doc): None when it cannot be trusted to show a
    lifted limit, else whether the output rose.

    The output during the hold is the mean from its start to a window ago, the output now the
    mean of the last window; each a mean of counts, so its variance is about ``rate / span``.
    What the ready replicas could complete without the limit is the per-replica rate the hold's
    first verdict started from. None (probes go on) when no replica is held past those that
    verdict measured, when the margin is under the noise, or when the output held fell below the
    plateau the verdict measured: then it is not a limit splitting the same output."""
    now, window = points[-1][0], lift_window(svc)
    held = _mean_rate(points, start.judged_at, now - window)
    recent = _mean_rate(points, now - window, now)
    ready = ready_at(points, len(points) - 1, svc.startup_delay)
    if held is None or recent is None or start.ready_before <= 0 or ready <= start.ready_before:
        return None
    (c, n_held), (r, n_recent) = held, recent
    step = svc.check_interval
    could = ready * start.rate_before / start.ready_before
    margin = EFFECTIVE_SHARE * (could - c)
    noise = NOISE_Z * math.sqrt(c / (n_held * step) + c / (n_recent * step))
    plateau = start.rate_before + start.observed_gain
    if margin < noise or c < plateau - NOISE_Z * math.sqrt(2 * plateau / step):
        return None
    return r - c >= margin


def hold_s(svc: ServiceConfig) -> float:
    """How long scale-ups are held before one replica is tried."""
    return max(HOLD_MIN_S, HOLD_CYCLES * (svc.startup_delay + svc.check_interval))


def probe_wait(svc: ServiceConfig, streak: int) -> float:
    """The hold before a probe after ``streak`` ineffective scale-ups: ``hold_s``, doubled for each
    failed probe (each one past ``STREAK``), at most ``MAX_QUIET_S``."""
    return min(MAX_QUIET_S, hold_s(svc) * 2.0 ** max(0, streak - STREAK))


def observe(sat: Saturation) -> dict[str, float]:
    """The observation rules and /metrics see: ``scaling.ineffective`` 1 while not helping."""
    return {"scaling.ineffective": 1.0 if sat.ineffective else 0.0}


def probe_step(svc: ServiceConfig, v: Verdict) -> int:
    """The fewest replicas whose expected gain a verdict can tell from counting noise (at least 1),
    at the per-replica rate of the latest level measured (``v``'s, after it)."""
    rate = v.rate_before + v.observed_gain
    per_replica = rate / max(v.ready_after, 1)
    if per_replica <= 0:
        return 1
    # the verdict's test, with a quarter to spare: a probe too small to judge would be wasted
    noise = NOISE_Z * math.sqrt(2 * rate / svc.check_interval)
    return max(1, math.ceil(1.25 * noise / per_replica))


def _gains(streak: Sequence[Verdict]) -> str:
    expected = sum(v.expected_gain for v in streak)
    observed = sum(v.observed_gain for v in streak)
    return f"{observed:+.4g}/s where {expected:+.4g}/s was expected"


def hold(svc: ServiceConfig, sat: Saturation, proposal: Proposal, current: int, now: float) -> Proposal:
    """``proposal``, or a hold at ``current`` when it is a scale-up that the history says will not help.

    While one scale-up was ineffective (``suspect``) and another is not yet measured, further
    scale-ups wait for its verdict: without that a policy that adds replicas every tick is far
    past the limit by the time a second verdict comes.
    """
    if proposal.target <= current:
        return proposal
    streak = sat.streak
    if sat.suspect and sat.unverified and current >= streak[0].ready_before:
        return Proposal(current, f"wants {proposal.target}: {proposal.reason}; the scale-up measured last added "
                                 f"no throughput ({_gains(streak)}): holding at {current} until the next one is "
                                 f"measured", keeps=True)
    if not sat.ineffective:
        return proposal
    # below the count the first ineffective scale-up started from, scale-ups worked
    if current < streak[0].ready_before:
        target = min(proposal.target, streak[0].ready_before)
        return Proposal(target, f"{proposal.reason}; at most {target}: more added no throughput before", keeps=proposal.keeps)
    if sat.lifted:
        return Proposal(proposal.target, f"{proposal.reason}; the output rose with the replicas held: the limit "
                                         f"lifted, scaling again", keeps=proposal.keeps)
    n = len(streak)
    ago = now - streak[0].seen_at
    what = (f"{n} scale-up{'s' if n > 1 else ''} in the last {_span(ago)} added no throughput ({_gains(streak)}): "
            f"a downstream limit?")
    quiet = now - max(streak[-1].judged_at, sat.last_up_at or -math.inf)
    if sat.lifted is not None and quiet < MAX_QUIET_S:
        # the spare replicas held would show a lifted limit by themselves: a probe would only add
        # to them, until a probe period at its longest has passed without a verdict
        return Proposal(current, f"wants {proposal.target}: {proposal.reason}; {what} Holding at {current} "
                                 f"(the output would rise with these if the limit lifted)", keeps=True)
    wait = probe_wait(svc, len(streak))
    if not sat.unverified and quiet >= wait:
        probe = min(proposal.target, current + probe_step(svc, streak[-1]))
        return Proposal(probe, f"wants {proposal.target}: {proposal.reason}; {what} "
                               f"Probing with {probe - current} more after {_span(quiet)}", keeps=True)
    return Proposal(current, f"wants {proposal.target}: {proposal.reason}; {what} Holding at {current}", keeps=True)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f} min"
