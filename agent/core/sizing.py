"""The ``docktor`` sizing policy: the fewest replicas that start every message within ``target_wait``.

A pure function of (config, observations, current replicas, state, rules evaluation, time). All
estimates are recomputed from ``state.history`` (the loop and the simulator append every tick's
observations with :func:`docktor.agent.core.decide.remember`), so the daemon and the simulator
run exactly the same code and nothing hides in mutable memory. docs/policy.md has the long form.

Per tick:

1. **Throughput per replica** ``mu``: the larger of Little's law (``sum(rate_out) /
   sum(ack_pending)`` over recent ticks, skipping intervals in which the queue drained) and the
   upper quartile of ``rate_out / running`` on saturated ticks; both read low rather than high. Before either: ``1 / processing_time`` if
   configured, else the best ``rate_out / running`` seen, a lower bound that only sizes the queue.
2. **Deadlines of the queue**: the queue is FIFO, so the ``pending`` messages are the last ones
   that arrived; walking the ``rate_in`` history back says when each arrived, hence by when it
   must start (:func:`docktor.agent.core.deadlines.queue_deadlines`).
3. **Capacity over time**: the replicas ready now serve from now; those still starting (the
   running count's history says which) and any added now serve after ``startup_delay``.
4. **The plan**: the fewest replicas so that every queued message, and every message forecast to
   arrive (the current rate until the next check, then the smoothed rate), starts in time up to
   a horizon of the SLO plus one check and one start-up. A queue that the replicas already
   running can drain in time needs no more; a standing queue lets the count sit below the
   arrival rate for a while (the queue absorbs the difference), which is where the cost goes.
   Where a start-up plus a check outlasts the wait budget, the next checks cannot follow a rise
   in time, so a steady rise (the rates' slope over that span, less one standard error) is
   extrapolated to when replicas started now are ready.
5. **Robustness**: the count must also absorb the largest volume that arrived within one check
   interval lately (a late read counts one interval of its rate), all at once, then the peak
   rate: lately is the span scale-in calls soon, or ``SURGE_MEMORY`` seconds for a surge that
   came back (:mod:`docktor.agent.core.surges`) or where a start-up outlasts the wait budget,
   given that the following checks scale out as fast as the guardrails allow. Where the SLO leaves time to
   react (the SLO exceeds one check plus one start-up) this costs little; where it does not,
   this is the spare capacity that meeting the SLO takes. A surge past what ``max_replicas``
   absorbs is insured (with at most the maximum) only once one comes back.
6. **Scale-in** goes only as far as a longer plan (``SCALE_IN_EXTRA`` more start-ups, at the
   higher of today's and the smoothed rate) allows: a replica removed and needed again soon
   costs a start-up delay of capacity. No replica is removed while queued messages are already
   too late for any count to save, or could be if each check interval's arrivals came at its
   start (the source counts them per interval, not when within it).
7. **A load that repeats** (:mod:`docktor.agent.core.periodic`): while the reads follow a
   period, and holding replicas through it is cheaper than following each burst, the count is
   the fewest that, held, start the next period in time; steps 5 and 6 stand down meanwhile.
   Where following is cheaper, a period seen three times, fitting well, with checks that leave
   room, is followed on its forecast: each burst's replicas start two checks before the last
   check that has them ready and go after it, never below what the queue and today's rate need
   (:func:`periodic.follow`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import deadlines as dl
from docktor.agent.core import periodic, recalled_loop, surges
from docktor.agent.core.busy import busy_interval
from docktor.agent.core.carried import Sized
from docktor.agent.core.derived import pending, time_of
from docktor.agent.core.feedback import NONE, Correction, correct
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.rules import Evaluation
from docktor.agent.core.state import ServiceState

#: saturated throughput samples kept, and the quantile taken (start-up bias is downward)
MU_SAMPLES = 20
MU_QUANTILE = 0.75
#: intervals looked back through for saturated samples (a count that keeps changing has few)
MU_SCAN = 120
#: a per-replica service rate below this (messages/s) is noise, not a measurement
MIN_RATE = 1e-6
#: in-flight messages summed over the recent ticks before Little's law is trusted
LITTLE_MIN_IN_FLIGHT = 20.0
#: fraction of target_wait kept back for measurement noise and the fluid model's optimism
SLO_MARGIN = 0.1
#: time constant of the smoothed arrival rate, in target_waits
LEVEL_TAU = 0.5
#: the surge the count must absorb: the largest of this trailing window, seconds
SURGE_MEMORY = 1800.0
#: the trend (long start-ups only): standard errors taken off the fitted slope, and the fewest
#: reads it is fitted on
TREND_Z = 1.0
TREND_MIN_POINTS = 4
#: a surge past what max_replicas absorbs is insured only if seen again this far from the largest, s
SURGE_APART = 60.0
#: later checks the robustness check counts on to scale out
RECOURSE_CHECKS = 6
#: scale-in is planned over this many more (check interval + start-up delay): a replica removed
#: and needed again soon costs a start-up delay of capacity, so it goes only if not needed soon
SCALE_IN_EXTRA = 6.0

#: how each throughput estimate reads in a decision's reason
MU_WORDS = {
    "littles_law": "by Little's law",
    "saturated": "measured while busy",
    "processing_time": "from processing_time",
    "lower_bound": "at least: the best seen",
    # a lower bound, checks past the wait budget, and a busy interval or more replicas than the
    # rate over the bound: the rate counts too (docs/policy.md step 1, agent/core/busy.py)
    "lower_bound_busy": "at least: the best seen; the replicas were busy or are more than the rate needs, so the rate counts",
}


def _quantile(values: Sequence[float], q: float) -> float:
    """``numpy.quantile``'s default (linear) on a short list, without numpy's per-call overhead."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _drained(prev: Mapping[str, float], cur: Mapping[str, float]) -> bool:
    """Whether the queue emptied during the interval: messages waited at its start and none at its end.

    Little's law needs the interval's *average* in-flight count, and a tick only samples it at
    the interval's end. When a queue drains mid-interval, the replicas were all busy for part
    of it and idle at the end, so the sample is far below the average and the throughput per
    replica reads high: on diurnal with the adversarial advisor, 50 replicas draining 9,434
    messages left 5 in flight at the tick, and for the next 20 ticks the estimate read 70/s per
    replica for 50/s of work (68 messages late).
    """
    p0, p1 = pending(prev), pending(cur)
    return p0 is not None and p1 is not None and p0 > 0 and p1 <= 0


def estimate_mu(svc: ServiceConfig, points: Sequence[tuple[float, Mapping[str, float]]]) -> tuple[float | None, str]:
    saturated: list[float] = []
    # newest first: only the last MU_SAMPLES saturated intervals of the last MU_SCAN are used
    for k in range(len(points) - 1, max(0, len(points) - 1 - MU_SCAN), -1):
        if len(saturated) >= MU_SAMPLES:
            break
        (t0, prev), (_, cur) = points[k - 1], points[k]
        running, rate_out = cur.get("replicas.running"), cur.get("queue.rate_out")
        if not running or rate_out is None or running <= 0:
            continue
        p0, p1 = pending(prev), pending(cur)
        if p0 is None or p1 is None or p0 <= 0 or p1 <= 0:
            continue
        # Clean only if every replica counted was ready for the whole interval: the count did not
        # change since start-up delay before the interval began.
        j = bisect.bisect_left(points, t0 - svc.startup_delay, hi=k, key=time_of)
        if j < k and points[j][0] <= t0 and all(
            points[m][1].get("replicas.running") == running for m in range(k - 1, max(0, j - 1) - 1, -1)
        ):
            saturated.append(rate_out / running)
    # Little's law: messages in flight = throughput x time each takes, so the per-replica service
    # rate is rate_out / ack_pending, averaged over recent ticks. It holds loaded or not, which
    # the saturated samples do not guarantee (a momentary queue at two ticks is not saturation).
    # Prefetched but unstarted messages inflate ack_pending, which only errs toward more replicas.
    # The window reaches back (newest first) until it holds enough in-flight samples to trust.
    out_sum = in_flight = 0.0
    used = 0
    for k in range(len(points) - 1, -1, -1):
        o = points[k][1]
        if "queue.rate_out" not in o or "queue.ack_pending" not in o:
            continue
        if k > 0 and _drained(points[k - 1][1], o):
            continue
        out_sum += o["queue.rate_out"]
        in_flight += o["queue.ack_pending"]
        used += 1
        if used >= MU_SAMPLES and in_flight >= LITTLE_MIN_IN_FLIGHT:
            break
    little = out_sum / in_flight if in_flight >= LITTLE_MIN_IN_FLIGHT else 0.0
    # Both are lower bounds in practice: workers that prefetch a batch keep more messages in
    # flight than they serve (Little's law reads low), and a queue seen at two ticks need not
    # have kept every replica busy in between (saturated samples read low). Take the better one.
    busy = _quantile(saturated, MU_QUANTILE) if saturated else 0.0
    if max(little, busy) > MIN_RATE:
        return (little, "littles_law") if little >= busy else (busy, "saturated")
    if svc.processing_time:
        return 1.0 / svc.processing_time, "processing_time"
    best_unsaturated = max(
        (o["queue.rate_out"] / o["replicas.running"] for _, o in points[1:]
         if o.get("replicas.running") and o["replicas.running"] > 0 and "queue.rate_out" in o),
        default=0.0,
    )
    if best_unsaturated > MIN_RATE:
        return best_unsaturated, "lower_bound"
    return None, "unknown"


def _smooth(times: np.ndarray, values: np.ndarray, tau: float) -> np.ndarray:
    out = np.empty_like(values)
    acc = values[0]
    out[0] = acc
    for i in range(1, len(values)):
        alpha = 1.0 - math.exp(-max(0.0, times[i] - times[i - 1]) / tau)
        acc += alpha * (values[i] - acc)
        out[i] = acc
    return out


def rise_per_second(times: np.ndarray, rates: np.ndarray, since: float) -> float:
    """How fast the arrival rate is surely rising: the least-squares slope of the rates read
    since ``since``, less ``TREND_Z`` standard errors (noise alone reads as 0), at least 0."""
    w = times >= since - 1e-9
    if int(w.sum()) < TREND_MIN_POINTS:
        return 0.0
    x, y = times[w], rates[w]
    dx, dy = x - x.mean(), y - y.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return 0.0
    slope = float(dx @ dy) / sxx
    resid = dy - slope * dx
    se = math.sqrt(float(resid @ resid) / (x.size - 2) / sxx)
    return max(0.0, slope - TREND_Z * se)


def ready_steps(
    points: Sequence[tuple[float, Mapping[str, float]]], now: float, startup: float, running: float
) -> list[tuple[float, int]]:
    """Replicas surely ready u seconds from now, for u within the start-up delay: (u, count) steps.

    A replica counted at time t was started by t, so it is ready by t + startup; the count ready
    at now + u is the fewest running seen since now + u - startup.
    """
    recent = [(t, o["replicas.running"]) for t, o in points if t > now - startup and "replicas.running" in o]
    if not recent or recent[-1][0] < now:
        recent.append((now, running))
    lowest = [0.0] * len(recent)
    low = math.inf
    for j in range(len(recent) - 1, -1, -1):
        low = min(low, recent[j][1])
        lowest[j] = low
    steps = [(0.0, int(lowest[0]))]
    for j in range(len(recent) - 1):
        steps.append((max(0.0, recent[j][0] - now + startup), int(lowest[j + 1])))
    return steps


def _step_up(svc: ServiceConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The step guardrail (:func:`docktor.agent.core.guardrails.step_up`) over an array of counts."""
    # the same limits: an unset one is None, and a step is always at least one replica
    by, pct = float(svc.scale_up_by or 1), float(svc.scale_up_percent or 0.0)

    def step_up(counts: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.maximum(by, np.ceil(counts * pct / 100.0))
        return out

    return step_up


def docktor_policy(
    svc: ServiceConfig, obs: Mapping[str, float], current: int, state: ServiceState, ev: Evaluation, now: float
) -> Proposal:
    points = state.series(obs, now)
    mu, mu_source = estimate_mu(svc, points)
    # the closed loop (core/feedback.py), with what it found before a restart (core/recalled_loop.py)
    loop = recalled_loop.correction(correct(svc, points, mu), svc, state, mu, now) if mu is not None else NONE
    # the proposal carries them for the effect check and the state file (core/carried.py)
    used = Sized(now, mu, loop.factor, loop.observed_age, loop.predicted_age)
    return replace(_size(svc, obs, current, now, points, mu, mu_source, loop), sized=used)


def _size(
    svc: ServiceConfig, obs: Mapping[str, float], current: int, now: float, points: Sequence[tuple[float, Mapping[str, float]]],
    mu: float | None, mu_source: str, loop: Correction,
) -> Proposal:
    loop_note = f"; {loop.text(mu)}" if mu is not None and loop.factor < 1 else ""
    mu = None if mu is None else mu * loop.factor
    backlog = obs["queue.backlog"]
    running = obs.get("replicas.running", float(current))
    if mu is None or not mu > MIN_RATE:
        # Nothing measured and nothing configured: all we know is whether work is waiting.
        if backlog > 0 and running == 0:
            return Proposal(max(1, svc.min_replicas), "work waiting and no replica running")
        return Proposal(current, "no throughput measured yet and no processing_time configured: holding", keeps=True)

    step, lag = svc.check_interval, svc.startup_delay
    slo = svc.target_wait * (1 - SLO_MARGIN)
    waiting = pending(obs)
    queued = max(0.0, backlog if waiting is None else waiting)
    with_rate = [(t, o["queue.rate_in"]) for t, o in points if "queue.rate_in" in o]
    times = np.array([t for t, _ in with_rate], dtype=float)
    rates = np.array([r for _, r in with_rate], dtype=float)
    q_at, q_due = dl.queue_deadlines(queued, times, rates, now, slo)
    ready = ready_steps(points, now, lag, running)
    cap = dl.Capacity(mu, ready, int(running), lag)
    ceiling = 2 * max(svc.max_replicas, int(running), 1)

    # The expected load: today's rate until the next check, then the smoothed rate (the next
    # checks see what really comes). A lower bound on throughput (nothing was ever queued) sizes
    # the queue alone: a rate term would keep whatever count happens to run. Unless the next check
    # comes after the wait budget (the rate's messages are late before it sees them queued) and
    # the last interval shows the replicas busy, or the rate over the bound asks fewer than run:
    # then neither keeps an idle count, and the rate counts too.
    rate_now = float(obs.get("queue.rate_in", 0.0))
    level = rate_now
    if rates.size:
        tau = max(step, LEVEL_TAU * svc.target_wait)
        window = times > now - 8 * tau  # older samples weigh less than e^-8
        level = float(_smooth(times[window], rates[window], tau)[-1]) if window.any() else rate_now
    # A steady rise, where a start-up (plus the check that sees it) outlasts the wait budget: the
    # next checks would see the higher rate too late for the replicas they start, so plan for the
    # rate the rise reaches by the time replicas started now are ready.
    rising = 0.0
    if lag + step > slo and mu_source != "lower_bound":
        rising = rise_per_second(times, rates, now - (lag + step))
        if rising > 0 and rate_now + rising * lag > level:
            level = rate_now + rising * lag
    busy = mu_source == "lower_bound" and step > slo and (busy_interval(points) or rate_now < mu * running)
    if mu_source == "lower_bound" and not busy:
        rate_now = level = 0.0
    horizon = slo + step + lag
    marks = [u for u, _ in ready] + [lag, lag + step]
    expected = dl.demand(q_at, q_due, slo, rate_now, level, step, horizon, step, marks)
    n, feasible = dl.fewest_replicas(cap, expected, ceiling, 0.0)
    idle = queued <= 0 and rate_now <= 0
    if idle:
        # the numbers that size an idle queue are zeros: say so in words (the smoothed rate may
        # still be decaying from the last messages)
        why = "queue empty and nothing arriving" + (f" ({level:.3g}/s smoothed)" if level >= 0.005 else "")
    else:
        words = "lower_bound_busy" if busy else mu_source
        later = f"{level:.4g}/s in {lag:g}s (rising {rising:.3g}/s per s)" if rising > 0 else f"{level:.4g}/s smoothed"
        why = f"{queued:g} queued, {rate_now:.4g}/s now and {later}, {mu:.4g}/s per replica ({MU_WORDS[words]}){loop_note}"
    # A period in the reads that the newest read still follows, where holding replicas through
    # it is cheaper than following each burst: plan a whole period ahead on its forecast
    # (agent/core/periodic.py); the margins below are for load not foreseen and stand down.
    pattern = periodic.detect(times, rates, now, step) if mu_source != "lower_bound" else None
    if pattern is not None and pattern.holds(rate_now):
        ahead = periodic.demand(pattern, q_at, q_due, slo, horizon + pattern.period, marks)
        held, held_ok = periodic.fewest_held(cap, ahead, pattern, queued, ceiling)
        if held_ok and periodic.worth_holding(pattern, held, mu, lag):
            n, feasible = held, held_ok
            why += f"; the load repeats every {pattern.period:g}s ({100 * pattern.fit:.0f}% fit): {n} start the next period in time"
            if n > running:
                n = periodic.just_in_time(cap, ahead, pattern, queued, n, ceiling, step)
        else:
            # Cheaper followed, but foreseen: each burst's replicas start on the forecast, two checks
            # ahead of the last that has them ready, and go after it on the forecast, not on a
            # smoothed rate the burst left behind. Only where periodic.may_follow says the period
            # and the checks leave room for what the forecast does not see.
            followed = None
            if periodic.may_follow(pattern, slo, step, lag):
                # the queue and today's rate until the next check: never planned below (a burst
                # early or large is sized on what it left queued at once)
                shown = dl.demand(q_at, q_due, slo, rate_now, 0.0, step, horizon, step, marks)
                followed = periodic.follow(
                    cap, pattern, q_at, q_due, queued, slo, horizon, marks, ceiling, step,
                    dl.fewest_replicas(cap, shown, ceiling, 0.0)[0],
                )
            if followed is None:
                pattern = None
            else:
                n, feasible = followed, True
                why += (
                    f"; the load repeats every {pattern.period:g}s ({100 * pattern.fit:.0f}% fit), each burst followed:"
                    f" {n} start the next {2 * horizon:g}s in time"
                )
    else:
        pattern = None

    # Robustness: the largest volume one check interval brought lately, all at once, then the
    # peak rate; later checks may scale out as fast as the guardrails allow. With a lower bound on
    # throughput, only where the rate above counts.
    if (mu_source != "lower_bound" or busy) and rates.size and pattern is None:
        recent = times > now - SURGE_MEMORY
        gap = max(step, svc.cooldown_up)
        # A read that came late (a tick spent in a slow scale command, a failed read) spans more
        # than one check: its rate, spread evenly as the queue's deadlines read it, brought
        # rate x one check interval within any one check, not the whole span's volume at once.
        spans = np.minimum(np.diff(times, prepend=times[0] - step), gap)[recent]
        volumes, recent_rates, recent_times = rates[recent] * spans, rates[recent], times[recent]
        checks = np.arange(1, RECOURSE_CHECKS + 1) * gap
        added = dl.growth(np.arange(ceiling + 1, dtype=float), RECOURSE_CHECKS, _step_up(svc), float(svc.max_replicas))

        def absorbing(burst: float, peak: float) -> int:
            surge = dl.demand(
                q_at, q_due, slo, peak, peak, step, slo + float(checks[-1]) + lag, step,
                marks + [float(c) + lag for c in checks], burst=burst,
            )
            return dl.with_recourse(cap, surge, ceiling, 0.0, checks, added)[0]

        # Where a start-up fits in the wait budget, the largest of the span scale-in calls "soon",
        # or a larger one that came back within SURGE_MEMORY (agent/core/surges.py): a crowd that
        # came once is not insured for 30 min. Where it does not, no check however frequent
        # reacts to any surge in time: the margin is all there is, and remembers SURGE_MEMORY.
        soon = horizon + SCALE_IN_EXTRA * (lag + step) if slo > lag else SURGE_MEMORY
        largest = int(np.argmax(volumes))
        insured = surges.insured(recent_times, volumes, recent_rates, now, soon, SURGE_APART)
        burst, peak = insured.burst, insured.peak
        n_robust = absorbing(burst, peak)
        seen = (
            f"a surge that came back in the last {SURGE_MEMORY / 60:.0f} min" if insured.again
            else f"the peak of the last {soon / 60:.0f} min" if soon >= SURGE_MEMORY else f"the peak of the last {soon:.0f}s"
        )
        if n_robust > svc.max_replicas:
            # A surge more than max_replicas could not absorb in time: spare replicas only soften
            # it. Held for one that came once, they are a guess (the RabbitMQ example sat at its
            # maximum on an idle queue for 30 min after one burst); for one that comes back they
            # pay (spikes@8 with a 60 s start-up: 94.4 % -> 96.8 % of messages in time). So only
            # a surge seen again, SURGE_APART seconds or more from the largest, is insured, with
            # at most max_replicas.
            apart = np.abs(recent_times - recent_times[largest]) >= SURGE_APART
            n_robust = 0
            if apart.any():
                burst, peak = float(volumes[apart].max()), float(recent_rates[apart].max())
                n_robust = min(absorbing(burst, peak), svc.max_replicas)
                seen = f"a surge seen again in the last {SURGE_MEMORY / 60:.0f} min"
        if n < n_robust:
            n = n_robust
            why += f"; {n} to absorb {burst:.0f} at once then {peak:.4g}/s ({seen})"

    if n < running and feasible and pattern is None:
        # Scale-in: only what a longer plan, at the higher of today's and the smoothed rate,
        # would not bring back soon.
        longer = dl.demand(
            q_at, q_due, slo, rate_now, max(level, rate_now), step, horizon + SCALE_IN_EXTRA * (lag + step), step, marks
        )
        keep = min(dl.fewest_replicas(cap, longer, ceiling, 0.0)[0], int(running))
        if keep > n:
            n = keep
            why += f"; {keep} kept: needed again within {horizon + SCALE_IN_EXTRA * (lag + step):.0f}s"
    if feasible and n < running and queued > 0:
        # The source says how many messages arrived per check interval, not when within it, and
        # the plan spreads them evenly. After a spike that ended early in an interval the queue
        # is older than that (with 15 s checks, a queue left by a 7 s spike looked 6 s younger
        # than it was, and replicas went while its head was due). So no replica is removed
        # unless the plan still holds with each interval's arrivals at its start, the oldest
        # the queue can be. Scale-out keeps the even spread: the next check corrects it.
        e_at, e_due = dl.queue_deadlines(queued, times, rates, now, slo, earliest=True)
        oldest = dl.demand(e_at, e_due, slo, rate_now, level, step, horizon, step, marks)
        if not dl.fewest_replicas(cap, oldest, ceiling, 0.0)[1]:
            held = max(current, int(running))
            return Proposal(
                held,
                f"needs {n}: {why}; queued messages may be late whatever the count if they came early in "
                f"their {step:g}s interval: keeping all {held}",
                keeps=True,
            )
    if not feasible and n < running:
        held = max(current, int(running))
        return Proposal(held, f"needs {n}: {why}; some queued messages are late whatever the count: keeping all {held}", keeps=True)
    if not feasible:
        why += "; some queued messages are late whatever the count"
    if idle and n == 0:
        return Proposal(0, f"{why}: needs 0 replicas")
    return Proposal(n, f"needs {n}: {why}")
