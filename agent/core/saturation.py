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

**Not helping.** The hold starts with the first conclusive ineffective scale-up whose output
stayed *flat* (it did not fall by more than the noise): a limit splits the same output among more
replicas, whereas a slowdown that came with a scale-up (a deploy, a cold cache) makes the output
*fall*; one of those alone is not a limit, ``STREAK`` ineffective ones in a row are. Then the
policy's scale-ups are held at the count running when the hold began (``held_at``), with the
reason, and ``scaling.ineffective`` reads 1. Never a scale-in below that count: the signal only
withholds replicas, whatever the policy's own scale-in does is untouched. While one scale-up is
ineffective and another is not yet measured, further scale-ups wait for its verdict.

**Resume.** Two ways to see the limit lift, whichever the held count allows:

- *Spare replicas*: when the replicas held could complete more than the output measured during the
  hold (ready replicas x the per-replica rate before the limit) by a margin the mean of
  ``LIFT_WINDOW`` of counts can tell from noise, a lifted limit shows by itself: the output rises
  with no replica added. No probe is added then (a probe would only raise the peak); the hold ends
  when the mean output over the last window exceeds the hold's by half that margin.
- *Probe*: otherwise, after ``hold_s`` without a new verdict (doubled for each probe before), one
  replica is added. When it adds what it should, the streak ends and scaling is free again; when
  it does not (ineffective, or no verdict ``startup_delay`` + 2 checks after it was seen), its
  replicas are given back: the count returns to where the probe started. That undoes the hold's
  own probe, it is not a scale-in below the count held, and the held count does not ratchet up
  with every probe (the wait doubles for each probe given back).

Below the count the first ineffective scale-up started from, scale-ups worked, so they are never
held (after the load fell and the policy scaled in, it may come back up to there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.derived import Point, pending
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
    #: replicas running when it was judged
    running: int = 0


@dataclass(frozen=True)
class Saturation:
    """What the history says of the recent scale-ups."""

    verdicts: tuple[Verdict, ...]  # conclusive ones, oldest first
    #: a scale-up seen whose replicas have not been measured yet
    unverified: bool
    #: when the latest scale-up was seen (judged or not)
    last_up_at: float | None = None
    #: every scale-up of the memory, oldest first: (seen at, running before, running after)
    ups: tuple[tuple[float, int, int], ...] = ()
    #: the hold's spare-replica test: None while it cannot tell, else whether the output rose
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
        """The verdict the hold began with: the streak's first flat one, or its ``STREAK``-th."""
        return hold_start(self.streak)

    @property
    def ineffective(self) -> bool:
        return self.start is not None

    @property
    def suspect(self) -> bool:
        """The latest verdict was ineffective, but that is not yet a hold."""
        return bool(self.streak) and not self.ineffective

    @property
    def held_at(self) -> int | None:
        """The count the hold keeps: what was running when it began."""
        start = self.start
        return None if start is None else start.running

    @property
    def probes(self) -> tuple[tuple[float, int, int], ...]:
        """The scale-ups seen since the hold began (its probes), oldest first."""
        start = self.start
        return () if start is None else tuple(u for u in self.ups if u[0] > start.judged_at)


def hold_start(streak: Sequence[Verdict]) -> Verdict | None:
    for i, v in enumerate(streak):
        if v.flat or i + 1 >= STREAK:
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
    ups: list[tuple[float, int, int]] = []
    first = next((k for k, (t, _) in enumerate(points) if t >= now - MEMORY_S), len(points))
    for k in range(max(2, first), len(points)):
        prev, cur = points[k - 1][1].get("replicas.running"), points[k][1].get("replicas.running")
        if prev is None or cur is None or cur <= prev:
            continue
        seen_at = last_up_at = points[k][0]
        ups.append((seen_at, int(prev), int(cur)))
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
        running = int(points[after][1].get("replicas.running", ready_after))
        if rate_after is None:
            continue
        expected = (ready_after - ready_before) * rate_before / ready_before
        observed = rate_after - rate_before
        p_after = pending(points[after][1])
        if p_after is not None and p_after <= 0:
            # the queue emptied: the replicas did what was needed
            verdicts.append(Verdict(seen_at, points[after][0], ready_before, ready_after, rate_before, expected, observed,
                                    True, True, running))
            continue
        if not _saturated(points, after) or expected <= 0:
            continue
        noise = NOISE_Z * math.sqrt((rate_before + rate_after) / step)
        if expected < noise:
            continue
        verdicts.append(Verdict(seen_at, points[after][0], ready_before, ready_after, rate_before, expected, observed,
                                observed >= EFFECTIVE_SHARE * expected, observed >= -noise, running))
    verdicts.sort(key=lambda v: v.judged_at)
    sat = Saturation(tuple(verdicts), unverified, last_up_at, tuple(ups))
    start = sat.start
    if start is None:
        return sat
    return Saturation(sat.verdicts, unverified, last_up_at, sat.ups, _lifted(svc, points, start))


def lift_window(svc: ServiceConfig) -> float:
    """The span whose mean output the spare-replica test compares."""
    return max(LIFT_MIN_S, LIFT_CHECKS * svc.check_interval)


def _mean_rate(points: Sequence[Point], t0: float, t1: float) -> tuple[float, int] | None:
    """The mean ``rate_out`` of the saturated intervals ending in (t0, t1], and how many."""
    rates = [o["queue.rate_out"] for k, (t, o) in enumerate(points)
             if t0 < t <= t1 and "queue.rate_out" in o and _saturated(points, k)]
    return (sum(rates) / len(rates), len(rates)) if len(rates) >= 3 else None


def _lifted(svc: ServiceConfig, points: Sequence[Point], start: Verdict) -> bool | None:
    """The spare-replica test (see the module's doc): None when the held replicas could not show a
    lifted limit beyond noise (or the hold is too young to tell), else whether the output rose.

    The output during the hold is the mean from its start to a window ago; the output now the
    mean of the last window; each a mean of counts, so its variance is about ``rate / span``.
    What the ready replicas could complete without the limit is the per-replica rate the first
    ineffective scale-up started from."""
    now, window = points[-1][0], lift_window(svc)
    held = _mean_rate(points, start.judged_at, now - window)
    recent = _mean_rate(points, now - window, now)
    if held is None or recent is None or start.ready_before <= 0:
        return None
    (c, n_held), (r, n_recent) = held, recent
    step = svc.check_interval
    could = ready_at(points, len(points) - 1, svc.startup_delay) * start.rate_before / start.ready_before
    margin = EFFECTIVE_SHARE * (could - c)
    noise = NOISE_Z * math.sqrt(c / (n_held * step) + c / (n_recent * step))
    if margin < noise:
        return None
    return r - c >= margin


def hold_s(svc: ServiceConfig) -> float:
    """How long scale-ups are held before one replica is tried."""
    return max(HOLD_MIN_S, HOLD_CYCLES * (svc.startup_delay + svc.check_interval))


def probe_wait(svc: ServiceConfig, probes: int) -> float:
    """The hold before the next probe after ``probes`` that failed: ``hold_s``, doubled for each,
    at most half of ``MEMORY_S``."""
    return min(MEMORY_S / 2, hold_s(svc) * 2.0 ** probes)


def observe(sat: Saturation) -> dict[str, float]:
    """The observation rules and /metrics see: ``scaling.ineffective`` 1 while not helping."""
    return {"scaling.ineffective": 1.0 if sat.ineffective else 0.0}


def probe_step(svc: ServiceConfig, v: Verdict, current: int) -> int:
    """The fewest replicas whose expected gain a verdict can tell from counting noise (at least 1),
    at the output of the latest level measured (``v``'s, after it) shared by the ``current`` count,
    as the probe's verdict will reckon it."""
    rate = v.rate_before + v.observed_gain
    per_replica = rate / max(current, 1)
    if per_replica <= 0:
        return 1
    # the verdict's own test and no more: each replica past it only raises the peak, and a probe
    # that gets no verdict is given back like one that failed
    noise = NOISE_Z * math.sqrt(2 * rate / svc.check_interval)
    return max(1, math.ceil(noise / per_replica))


def _gains(streak: Sequence[Verdict]) -> str:
    expected = sum(v.expected_gain for v in streak)
    observed = sum(v.observed_gain for v in streak)
    return f"{observed:+.4g}/s where {expected:+.4g}/s was expected"


def hold(svc: ServiceConfig, sat: Saturation, proposal: Proposal, current: int, now: float) -> Proposal:
    """``proposal``, or a hold at ``current`` when it is a scale-up that the history says will not help.

    While one scale-up was ineffective (``suspect``) and another is not yet measured, further
    scale-ups wait for its verdict: without that a policy that adds replicas every tick is far
    past the limit by the time a second verdict comes. A probe that did not help is given back:
    its own replicas only, to the count it started from, and never below what the policy asks.
    """
    streak, start, held_at = sat.streak, sat.start, sat.held_at
    if start is not None and held_at is not None and sat.probes:
        # the last probe, undone when it did not help: only its own replicas, down to where it started
        probe_at, probe_from, probe_to = sat.probes[-1]
        measured = (streak[-1].seen_at >= probe_at
                    or now >= probe_at + svc.startup_delay + 2 * svc.check_interval)
        back = max(probe_from, current - (probe_to - probe_from))
        if measured and current > back and proposal.target >= back and not sat.lifted:
            return Proposal(back, f"wants {proposal.target}: {proposal.reason}; the probe to {probe_to} added no "
                                  f"throughput ({_gains(streak)}): giving it back, holding at {back}", keeps=True)
    if proposal.target <= current:
        return proposal
    if sat.suspect and sat.unverified and current >= streak[0].ready_before:
        return Proposal(current, f"wants {proposal.target}: {proposal.reason}; the scale-up measured last added "
                                 f"no throughput ({_gains(streak)}): holding at {current} until the next one is "
                                 f"measured", keeps=True)
    if start is None:
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
    if sat.lifted is not None and now - streak[-1].seen_at < MEMORY_S - hold_s(svc):
        # the replicas held would show a lifted limit by themselves: a probe would only add to
        # them, until the last verdict is about to be forgotten (then one renews it)
        return Proposal(current, f"wants {proposal.target}: {proposal.reason}; {what} Holding at {current} "
                                 f"(the output would rise with these if the limit lifted)", keeps=True)
    wait = probe_wait(svc, len(sat.probes))
    if not sat.unverified and quiet >= wait:
        probe = min(proposal.target, current + probe_step(svc, streak[-1], current))
        return Proposal(probe, f"wants {proposal.target}: {proposal.reason}; {what} "
                               f"Probing with {probe - current} more after {_span(quiet)}", keeps=True)
    return Proposal(current, f"wants {proposal.target}: {proposal.reason}; {what} Holding at {current}", keeps=True)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f} min"
