"""The ``docktor`` sizing policy: replicas from what the queue needs to meet a wait target.

A pure function of (config, observations, current replicas, state, rules evaluation, time). All
estimates are recomputed from ``state.history`` (the loop and the simulator append every tick's
observations with :func:`docktor.agent.core.state.remember`), so the daemon and the simulator run exactly the
same code and nothing hides in mutable memory. See docs/policy.md for the reasoning.

Per tick:

1. **Service rate** ``mu`` (messages/s one replica completes): the larger of Little's law
   (``sum(rate_out) / sum(ack_pending)`` over recent ticks) and the upper quartile of
   ``rate_out / running`` on saturated ticks (messages pending at both ends of the interval,
   replica count unchanged); both read low, never high (prefetching workers, a queue that emptied
   between ticks). Before either: ``1 / processing_time`` if configured, else the best
   unsaturated per-replica rate, a lower bound, with which only the backlog is sized.
2. **Arrival rate**: exponentially smoothed ``rate_in`` with a time constant equal to the wait
   budget (bursts shorter than the budget are the queue's job, not new replicas'), its spread
   around the smoothed value, and its trend.
3. **Deadline sizing**: with ``n_now`` replicas serving until new ones are ready after
   ``startup_delay`` (L), every message must start within the wait budget W
   (``target_wait`` minus a quarter for measurement noise minus one check interval, the age a
   message may have before we see it). For each horizon h > L:
   ``n_now*mu*L + n*mu*(h-L) >= backlog + arrivals(h - W)``. The largest n over the horizons,
   and at least ``forecast / mu`` so the queue does not grow, is the target.
4. **Prediction**: a positive trend raises the forecast over the start-up lag. When the rate
   history is periodic (autocorrelation), the arrivals one and two periods ago predict the next
   window. With ``prediction: floor`` (the default) the smaller of the two is sized with the same
   deadline rule and may only raise the target. With ``prediction: forecast``, if the prediction
   held for the last start-up delay plus wait budget (the arrivals exceeded it by no more than
   noise), it *is* the forecast: it knows that a burst ends, so the queue absorbs what it can and
   no replicas are added for a burst the deadlines do not need; otherwise it is a floor as above.

Scale-out is as fast as the step guardrails allow; scale-in is slow and hysteretic through the
guardrails (scale-down stabilization keeps the highest recommendation of the window).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.policy import Proposal
from docktor.agent.core.rules import Evaluation
from docktor.agent.core.state import ServiceState

#: fraction of target_wait kept back for measurement noise and sampling lag
WAIT_MARGIN = 0.25
#: saturated throughput samples kept, and the quantile taken (start-up bias is downward)
MU_SAMPLES = 20
MU_QUANTILE = 0.75
#: a per-replica service rate below this (messages/s) is noise, not a measurement
MIN_RATE = 1e-6
#: the trend is fitted over this many times the lag it projects over
TREND_SPAN = 3.0
#: in-flight messages summed over the recent ticks before Little's law is trusted
LITTLE_MIN_IN_FLIGHT = 20.0
#: minimum autocorrelation for the rate history to count as periodic
PERIODIC_MIN_CORR = 0.6
#: horizons examined past the start-up lag, in check intervals
HORIZON_STEPS = 24
#: a periodic prediction becomes the forecast when the recent arrivals exceeded what it predicted
#: for them by at most this fraction (plus three Poisson standard deviations)
FIT_TOLERANCE = 0.1



@dataclass(frozen=True)
class Estimates:
    mu: float | None  # messages/s per replica
    mu_source: str  # "measured", "processing_time", "lower_bound", "unknown"
    rate: float  # smoothed arrival rate, messages/s
    spread: float  # standard deviation of rate_in around the smoothed rate
    trend: float  # messages/s per second (least squares over the wait budget)
    period: float | None  # seconds, when the rate history is periodic


def wait_budget(svc: ServiceConfig) -> float:
    return max(svc.check_interval, svc.target_wait * (1 - WAIT_MARGIN) - svc.check_interval)


def _series(state: ServiceState, obs: Mapping[str, float], now: float) -> list[tuple[float, Mapping[str, float]]]:
    points: list[tuple[float, Mapping[str, float]]] = [(t, o) for t, o in state.history if t < now]
    points.append((now, obs))
    return points


def _pending(o: Mapping[str, float]) -> float | None:
    if "queue.pending" in o:
        return o["queue.pending"]
    if "queue.backlog" in o and "replicas.running" in o:
        return o["queue.backlog"] - o["replicas.running"]
    return None


def estimate_mu(svc: ServiceConfig, points: Sequence[tuple[float, Mapping[str, float]]]) -> tuple[float | None, str]:
    saturated: list[float] = []
    best_unsaturated = 0.0
    times = [t for t, _ in points]
    for k in range(1, len(points)):
        (t0, prev), (_, cur) = points[k - 1], points[k]
        running = cur.get("replicas.running")
        rate_out = cur.get("queue.rate_out")
        if not running or rate_out is None or running <= 0:
            continue
        per_replica = rate_out / running
        p0, p1 = _pending(prev), _pending(cur)
        # Clean only if every replica counted was ready for the whole interval: the count did not
        # change since start-up delay before the interval began.
        since = t0 - svc.startup_delay
        j = bisect.bisect_left(times, since)
        steady = j < k and times[j] <= t0 and all(points[m][1].get("replicas.running") == running for m in range(max(0, j - 1), k))
        if p0 is not None and p1 is not None and p0 > 0 and p1 > 0 and steady:
            saturated.append(per_replica)
        else:
            best_unsaturated = max(best_unsaturated, per_replica)
    # Little's law: messages in flight = throughput x time each takes, so the per-replica service
    # rate is rate_out / ack_pending, averaged over recent ticks. It holds loaded or not, which
    # the saturated samples do not guarantee (a momentary queue at two ticks is not saturation).
    # Prefetched but unstarted messages inflate ack_pending, which only errs toward more replicas.
    # The window reaches back (newest first) until it holds enough in-flight samples to trust.
    out_sum = in_flight = 0.0
    used = 0
    for _, o in reversed(points):
        if "queue.rate_out" not in o or "queue.ack_pending" not in o:
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
    busy = float(np.quantile(saturated[-MU_SAMPLES:], MU_QUANTILE)) if saturated else 0.0
    if max(little, busy) > MIN_RATE:
        return (little, "littles_law") if little >= busy else (busy, "saturated")
    if svc.processing_time:
        return 1.0 / svc.processing_time, "processing_time"
    if best_unsaturated > MIN_RATE:
        return best_unsaturated, "lower_bound"
    return None, "unknown"


def ready_replicas(svc: ServiceConfig, points: Sequence[tuple[float, Mapping[str, float]]], now: float) -> float:
    """Replicas surely past their start-up delay: the fewest running over the last start-up delay."""
    counts = [o["replicas.running"] for t, o in points if t >= now - svc.startup_delay and "replicas.running" in o]
    return min(counts) if counts else 0.0


def _smooth(times: np.ndarray, values: np.ndarray, tau: float) -> np.ndarray:
    out = np.empty_like(values)
    acc = values[0]
    out[0] = acc
    for i in range(1, len(values)):
        alpha = 1.0 - math.exp(-max(0.0, times[i] - times[i - 1]) / tau)
        acc += alpha * (values[i] - acc)
        out[i] = acc
    return out


def detect_period(times: np.ndarray, rates: np.ndarray) -> float | None:
    """The dominant period of the rate history, if it has repeated at least twice."""
    n = len(rates)
    if n < 8:
        return None
    span = times[-1] - times[0]
    idx = np.arange(n, dtype=float)
    x = rates - np.polyval(np.polyfit(idx, rates, 1), idx)  # a trend is not a period
    var = float(np.dot(x, x))
    if var <= 0:
        return None
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    ac = np.fft.irfft(f * np.conj(f), size)[:n] / var
    # lags of at least 3 samples, at most a third of the history: two full repeats must be seen
    lo, hi = 3, int(n / 3)
    if hi <= lo:
        return None
    # normalize by the overlap so long lags are not penalized; a period shows as the correlation
    # falling below zero (half a period out of phase) and then peaking again
    overlap = n / (n - np.arange(n))
    score = ac * overlap
    negative = np.nonzero(score[1:hi] < 0)[0]
    if negative.size == 0:
        return None
    lo = max(lo, int(negative[0]) + 1)
    if hi <= lo:
        return None
    lag = lo + int(np.argmax(score[lo:hi]))
    if score[lag] < PERIODIC_MIN_CORR:
        return None
    step = span / (n - 1)
    return float(lag * step)


def estimate(svc: ServiceConfig, obs: Mapping[str, float], state: ServiceState, now: float) -> Estimates:
    points = _series(state, obs, now)
    mu, mu_source = estimate_mu(svc, points)
    rp = [(t, o["queue.rate_in"]) for t, o in points if "queue.rate_in" in o]
    budget = wait_budget(svc)
    if not rp:
        return Estimates(mu, mu_source, 0.0, 0.0, 0.0, None)
    times = np.array([t for t, _ in rp], dtype=float)
    rates = np.array([r for _, r in rp], dtype=float)
    smooth = _smooth(times, rates, tau=budget)
    recent = times > now - max(budget, 4 * svc.check_interval)
    resid = rates[recent] - smooth[recent]
    spread = float(np.sqrt(np.mean(resid**2))) if resid.size > 1 else 0.0
    # Trend: least-squares slope of the raw rate over a window three times the lag it must
    # bridge (smoothing plus start-up), long enough that a short burst does not read as a ramp.
    trend = 0.0
    longer = times > now - max(TREND_SPAN * (budget + svc.startup_delay), 6 * svc.check_interval)
    if longer.sum() >= 4:
        t0 = times[longer] - times[longer].mean()
        denom = float(np.dot(t0, t0))
        if denom > 0:
            trend = float(np.dot(t0, rates[longer] - rates[longer].mean()) / denom)
    period = detect_period(times, rates)
    return Estimates(mu, mu_source, float(smooth[-1]), spread, trend, period)


def deadline_replicas(
    backlog: float,
    arrivals: Sequence[float],
    step: float,
    mu: float,
    n_now: float,
    lag: float,
    budget: float,
) -> float:
    """Fewest replicas (fractional) so that every message, queued or arriving, starts within ``budget``.

    ``arrivals[k]`` is the forecast of messages arriving in ``[k*step, (k+1)*step)`` from now.
    ``n_now`` replicas serve until ``lag``; the target count serves after it.
    """
    need = 0.0
    cumulative = np.concatenate([[0.0], np.cumsum(arrivals)])
    horizons = [lag + k * step for k in range(1, len(cumulative) + 1)]
    if budget > lag:
        horizons.append(budget)  # the tightest deadline, whether or not it falls on a tick
    for h in horizons:
        if h < budget:
            continue
        # messages that arrived by h - budget must have started by h
        idx = (h - budget) / step
        i = int(idx)
        if i >= len(cumulative) - 1:
            due_arrivals = cumulative[-1]
        else:
            due_arrivals = cumulative[i] + (idx - i) * (cumulative[i + 1] - cumulative[i])
        due = backlog + due_arrivals - n_now * mu * lag
        need = max(need, due / (mu * (h - lag)))
    return need


def _rate_history(state: ServiceState, obs: Mapping[str, float], now: float) -> tuple[np.ndarray, np.ndarray]:
    pts = [(t, o["queue.rate_in"]) for t, o in _series(state, obs, now) if "queue.rate_in" in o]
    return np.array([t for t, _ in pts], dtype=float), np.array([r for _, r in pts], dtype=float)


def _periods_back(times: np.ndarray, rates: np.ndarray, end: float, period: float, step: float) -> list[float] | None:
    """rate_in one and two periods before the step ending at ``end`` (None: not in the history)."""
    # rate_in at tick t describes the interval ending at t
    guesses = []
    for back in (period, 2 * period):
        when = end - back
        if when < times[0] or when > times[-1] + step:
            return None
        guesses.append(float(np.interp(when, times, rates)))
    return guesses


def _periodic_arrivals(
    state: ServiceState, obs: Mapping[str, float], now: float, period: float, step: float, count: int
) -> tuple[list[float], list[float]] | None:
    """Arrivals per step predicted from one and two periods ago: (the smaller, the larger) of the two."""
    times, rates = _rate_history(state, obs, now)
    low: list[float] = []
    high: list[float] = []
    for k in range(count):
        guesses = _periods_back(times, rates, now + (k + 1) * step, period, step)
        if guesses is None:
            return None
        low.append(min(guesses) * step)
        high.append(max(guesses) * step)
    return low, high


def prediction_fits(
    state: ServiceState, obs: Mapping[str, float], now: float, period: float, step: float, window: float
) -> bool:
    """Whether the arrivals of the last ``window`` seconds stayed within what the period predicted for them.

    The prediction for each past tick is the larger of the rates one and two periods before it.
    The arrivals may exceed it by ``FIT_TOLERANCE`` plus three Poisson standard deviations; more
    means the load is not repeating (a new burst, a higher level), and then the period must not
    be trusted to say when load ends.
    """
    times, rates = _rate_history(state, obs, now)
    recent = np.nonzero(times > now - window)[0]
    if recent.size == 0:
        return False
    observed = predicted = 0.0
    for i in recent:
        guesses = _periods_back(times, rates, float(times[i]), period, step)
        if guesses is None:
            return False
        dt = float(times[i] - times[i - 1]) if i > 0 else step
        observed += float(rates[i]) * dt
        predicted += max(guesses) * dt
    return observed <= predicted * (1 + FIT_TOLERANCE) + 3 * math.sqrt(predicted)


def docktor_policy(
    svc: ServiceConfig, obs: Mapping[str, float], current: int, state: ServiceState, ev: Evaluation, now: float
) -> Proposal:
    from docktor.agent.core.policy import Proposal

    est = estimate(svc, obs, state, now)
    backlog = obs["queue.backlog"]
    running = obs.get("replicas.running", float(current))
    if est.mu is None or not est.mu > MIN_RATE:
        # Nothing measured and nothing configured: all we know is whether work is waiting.
        if backlog > 0 and running == 0:
            return Proposal(max(1, svc.min_replicas), "work waiting and no replica running")
        return Proposal(current, "no throughput measured yet and no processing_time configured: holding")

    mu = est.mu
    step = svc.check_interval
    lag = svc.startup_delay
    budget = wait_budget(svc)
    count = HORIZON_STEPS + int(math.ceil((lag + budget) / step))
    ready = ready_replicas(svc, _series(state, obs, now), now)

    # The smoothed rate lags a trend by its time constant; project it over that lag plus start-up.
    forecast = est.rate + max(0.0, est.trend) * (budget + lag)
    if est.mu_source == "lower_bound":
        # A lower bound on throughput (no queue, too little in flight to measure) would make the
        # rate term self-fulfilling: size from the backlog alone until a real measurement exists.
        n_rate = 0.0
        n_deadline = deadline_replicas(backlog, [0.0] * count, step, mu, ready, lag, budget)
    else:
        n_rate = forecast / mu
        n_deadline = deadline_replicas(backlog, [forecast * step] * count, step, mu, ready, lag, budget)
    need = max(n_rate, n_deadline)
    why = f"rate {forecast:.4g}/s, backlog {backlog:g}, {mu:.4g}/s per replica ({est.mu_source})"

    if est.period is not None:
        predicted = _periodic_arrivals(state, obs, now, est.period, step, count)
        if predicted is not None:
            low, high = predicted
            window = max(lag + budget, 2 * step)
            if (
                svc.prediction == "forecast"
                and est.mu_source != "lower_bound"
                and prediction_fits(state, obs, now, est.period, step, window)
            ):
                # The load has been repeating itself: the period says when a burst ends as well as
                # when it starts, so it replaces the assumption that today's rate persists.
                n_rate = sum(high) / (count * step) / mu
                need = max(n_rate, deadline_replicas(backlog, high, step, mu, ready, lag, budget))
                why += f"; forecast from the load {est.period:.0f}s and {2 * est.period:.0f}s ago (it fit the last {window:.0f}s)"
            else:
                n_pred = deadline_replicas(backlog, low, step, mu, ready, lag, budget)
                if n_pred > need:
                    need = n_pred
                    why += f"; recurring load every {est.period:.0f}s"

    # Far beyond max_replicas means the same as max_replicas to the guardrails; keep it an int.
    ceiling = 10 * max(1, svc.max_replicas)
    target = ceiling if not math.isfinite(need) or need > ceiling else max(0, math.ceil(need - 1e-9))
    return Proposal(target, f"needs {need:.2f} replicas: {why}")

