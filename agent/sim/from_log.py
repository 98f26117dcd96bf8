"""``docktor bench --from-log``: rebuild one service's load from the decisions the daemon logged.

Each decision record holds what the daemon observed at that tick (``observations``: the queue's
backlog, pending and in-flight counts, its arrival and completion rates, the replicas running)
and what it did (``current_replicas`` -> ``target_replicas``, ``executed``, the executor's
``outcome`` with its duration). From consecutive records this module rebuilds:

- **the start**: the first reading made a start-up delay after the last change before it (a
  replay starts with its replicas ready, as they then were).
- **arrivals** per interval: ``queue.rate_in`` x the interval when the source measured it (the
  rate is taken between two consecutive reads of the source, so it covers exactly the interval
  since the previous record, a gap included); else the backlog's change plus the completions
  (``queue.rate_out`` x the interval), which without ``rate_out`` is a lower bound. Each interval's
  arrivals are spread evenly over its seconds; in an interval that began with the queue empty and
  ended with messages pending, from when the completions show the replicas began working. What
  was queued at the first record waits at 0 s.
- **start-up**: from the scale-ups with messages pending throughout the next interval, what the
  new replicas did beyond the old ones (else the config's ``startup_delay``).
- **service time** per replica: replicas / ``queue.rate_out`` over the intervals in which every
  replica had work (messages pending at both ends) and the count had been steady for the
  start-up delay, weighted by time; else the config's ``processing_time``; else the best
  per-replica throughput seen (busy replicas only), which is an upper bound of the service time.
- **messages in flight per busy replica**: ``queue.ack_pending`` / replicas while messages were
  pending. A worker that fetches a batch holds more than the one it works on, and the policies
  read ``ack_pending`` (the docktor policy's Little's law), so the replay's readings do too.
- **the executor's own time**: the median duration of the scale-ups and of the scale-ins the log's
  outcomes record. The loop waits for the executor before its next tick, and a replica being
  stopped costs until it has stopped (a worker that ignores SIGTERM runs the whole grace period).
- **what the daemon did**: its replica-seconds, counted from the records themselves (a scale-up
  counts from its decision, a scale-in from its outcome), and its actions.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from docktor.agent.config.model import ServiceConfig
from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.simulator import Scenario, Workload, workload
from docktor.agent.sim.trace_file import Trace
from docktor.agent.timestamps import parse_rfc3339

#: the fewest records with queue readings a replay can be rebuilt from
MIN_RECORDS = 5
#: how far before the start the readings are replayed into the policies' memory (not into the queue)
HISTORY_S = 300.0
#: an interval longer than this many check intervals (and not spent waiting for the executor) is a gap
GAP_FACTOR = 1.5


@dataclass(frozen=True)
class Reading:
    """One record, reduced to what the rebuilding uses."""

    t: float  # seconds since the epoch
    current: int
    target: int | None
    executed_ok: bool
    outcome_t: float | None  # when the executor's outcome was written
    duration_s: float | None  # how long the executor took
    obs: dict[str, float]

    @property
    def queued(self) -> float | None:
        return self.obs.get("queue.backlog")


@dataclass
class Rebuilt:
    service: str
    trace: Trace
    scenario: Scenario
    initial: int  # replicas at the first reading
    start: float
    end: float
    readings: int
    interval_s: float  # median time between readings
    start_call_s: float  # median duration of a scale-up (the executor's call)
    #: the arrivals as rebuilt, before they are counted per second: (seconds from the start,
    #: messages arrived by then), linear in between; :func:`arrivals_workload` draws from it
    knots: tuple[list[float], list[float]] | None = None
    #: the rates of the first reading (a replay's first read of the queue has none of its own)
    first_rates: dict[str, float] = field(default_factory=dict)
    #: when (seconds from the start) the daemon decided: its own clock, which the replayed policies read
    ticks: list[float] = field(default_factory=list)
    #: (seconds before the start, replicas, observations) of the readings just before the start:
    #: what the daemon's policy remembered at the first reading, given to the replay's policies too
    history: list[tuple[float, int, dict[str, float]]] = field(default_factory=list)
    #: messages in flight per busy replica (>1: workers that prefetch a batch), on average and
    #: (seconds from the start, ratio) at each reading with messages pending
    held_per_replica: float = 1.0
    held_at: list[tuple[float, float]] = field(default_factory=list)
    #: how the trace was rebuilt, and what it cannot know: lines for the report
    how: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: what the daemon did (None: the source says nothing of it, as a Prometheus series)
    actual_replica_seconds: float | None = None
    actual_actions: int = 0


# --------------------------------------------------------------------------- reading


def read_decisions(path: Path) -> list[dict[str, Any]]:
    """Every decision of the log (and its rotations), intents merged with outcomes; bad input is
    one ``--from-log`` problem."""
    from docktor.agent.runtime.log_reader import read_records

    if path.is_dir():
        raise UsageError([Problem("--from-log", f"{path}: a directory, not a decision log (decisions.jsonl in the state_dir)")])
    if not path.exists():
        raise UsageError([Problem("--from-log", f"{path}: no such file")])
    try:
        records = [r for r in read_records(path) if _is_decision(r)]
    except OSError as e:
        raise UsageError([Problem("--from-log", f"{path}: cannot read: {e.strerror or e}")]) from None
    if not records:
        raise UsageError([Problem("--from-log", f"{path}: not a decision log (no line with ts, service, decision and observations)")])
    return records


def _is_decision(rec: dict[str, Any]) -> bool:
    return all(k in rec for k in ("ts", "service", "decision")) and isinstance(rec.get("observations"), dict)


def pick_service(records: list[dict[str, Any]], service: str | None) -> str:
    names = sorted({str(r["service"]) for r in records})
    if service is None:
        if len(names) == 1:
            return names[0]
        raise UsageError([Problem("--service", f"the log has decisions of {len(names)} services: name one ({', '.join(names)})")])
    if service not in names:
        raise UsageError([Problem("--service", f"no decisions of service {service!r} in the log (it has: {', '.join(names)})")])
    return service


def readings(records: list[dict[str, Any]], service: str) -> list[Reading]:
    out: list[Reading] = []
    for r in records:
        if r.get("service") != service or r.get("current_replicas") is None:
            continue
        try:
            t = parse_rfc3339(str(r["ts"]))
            outcome = r.get("outcome") or {}
            ok = bool(r.get("executed")) and outcome.get("status") == "ok"
            out_ts = r.get("outcome_ts")
            duration = outcome.get("duration_ms")
            out.append(Reading(
                t=t,
                current=int(r["current_replicas"]),
                target=None if r.get("target_replicas") is None else int(r["target_replicas"]),
                executed_ok=ok,
                outcome_t=parse_rfc3339(str(out_ts)) if ok and out_ts else None,
                duration_s=float(duration) / 1000 if ok and isinstance(duration, (int, float)) else None,
                obs={str(k): float(v) for k, v in r["observations"].items() if isinstance(v, (int, float))},
            ))
        except (ValueError, TypeError, KeyError):
            continue  # a record this version cannot read is skipped, as every reader of the log does
    out.sort(key=lambda x: x.t)
    return out


# --------------------------------------------------------------------------- rebuilding


def rebuild(records: list[dict[str, Any]], service: str, svc: ServiceConfig, *, cv: float = 0.5, seed: int = 1) -> Rebuilt:
    """The trace and scenario of ``service`` from its decision records (see the module's doc)."""
    all_readings = readings(records, service)
    usable = _settled([x for x in all_readings if x.queued is not None], all_readings, svc.startup_delay)
    if len(usable) < MIN_RECORDS:
        raise UsageError([Problem("--from-log", f"only {len(usable)} decisions of service {service!r} have queue readings "
                                                f"(queue.backlog); a replay needs at least {MIN_RECORDS}")])
    start, end = usable[0].t, usable[-1].t
    dts = [b.t - a.t for a, b in zip(usable, usable[1:])]
    interval = statistics.median(dts)
    if not end - start >= 1.0:
        raise UsageError([Problem("--from-log", f"the decisions of service {service!r} span {end - start:.1f} s: too short to replay")])
    how: list[str] = []
    unknown: list[str] = []

    # --- the executor's own time, from the outcomes
    ups = [x.duration_s for x in all_readings if x.executed_ok and x.target is not None and x.target > x.current and x.duration_s is not None]
    downs = [x.duration_s for x in all_readings if x.executed_ok and x.target is not None and x.target < x.current and x.duration_s is not None]
    start_call = statistics.median(ups) if ups else 0.0
    stop_s = statistics.median(downs) if downs else 0.0

    # --- service time
    service_s, service_how = _service_time(usable, svc)
    if service_s is None:
        raise UsageError([Problem("--from-log", f"no queue.rate_out with busy replicas in the decisions of service {service!r}, "
                                                "so the service time cannot be rebuilt: set processing_time for it in the config")])

    # --- arrivals per interval
    times, cumulative = [0.0], [usable[0].queued or 0.0]
    by_rate = by_backlog = lower = onsets = 0
    gaps: list[tuple[float, float]] = []
    for a, b in zip(usable, usable[1:]):
        dt = b.t - a.t
        onset = _onset(a, b, service_s)
        if onset > 0:
            # the queue was empty and the replicas idle until then: the interval's arrivals came after
            times.append(a.t - start + onset)
            cumulative.append(cumulative[-1])
            onsets += 1
        waited = a.duration_s or 0.0
        if dt > GAP_FACTOR * interval + waited:
            gaps.append((a.t - start, dt))
        rate_in = b.obs.get("queue.rate_in")
        if rate_in is not None:
            arrived = rate_in * dt
            by_rate += 1
        else:
            done = b.obs.get("queue.rate_out")
            arrived = max(0.0, (b.queued or 0.0) - (a.queued or 0.0) + (done * dt if done is not None else 0.0))
            by_backlog += 1
            lower += done is None
        times.append(b.t - start)
        cumulative.append(cumulative[-1] + max(0.0, arrived))
    trace = spread(f"{service} (log)", times, cumulative, max(1, int(round(end - start))))

    # --- messages each busy replica holds (a worker that fetches a batch acks them one by one)
    loaded = [x for x in usable if x.obs.get("queue.pending", 0.0) > 0 and "queue.ack_pending" in x.obs
              and x.obs.get("replicas.running", 0.0) > 0]
    held = max(1.0, sum(x.obs["queue.ack_pending"] for x in loaded) / sum(x.obs["replicas.running"] for x in loaded)) if loaded else 1.0

    startup, startup_how = _startup(usable, service_s, svc.startup_delay)
    scenario = Scenario(
        service_s=service_s, cv=cv, startup_s=startup, slo_s=svc.target_wait, interval_s=svc.check_interval,
        min_replicas=svc.min_replicas, max_replicas=svc.max_replicas, seed=seed, stop_s=stop_s,
    )
    scenario.check()

    how.append(f"{len(usable)} decisions of {service!r} with queue readings, every {interval:.1f} s (median; "
               f"check_interval {svc.check_interval:g} s), {_span(end - start)}")
    how.append(f"arrivals: queue.rate_in x interval at {by_rate} of {len(dts)} intervals"
               + (f", backlog change + completions at {by_backlog}" if by_backlog else "")
               + f"; {int(usable[0].queued or 0):,} queued at the first decision waiting at 0 s; {trace.messages:,} messages in all")
    if onsets:
        how.append(f"onsets: {onsets} intervals began with the queue empty and ended with messages pending: their arrivals "
                   "start when the completions show the replicas began working, not at the interval's start")
    how.append(f"service time: {service_s * 1000:.1f} ms per message per replica ({service_how})")
    how.append(f"start-up: {startup:.1f} s ({startup_how}); SLO: {svc.target_wait:g} s wait (target_wait)")
    if held > 1.0:
        how.append(f"in flight: {held:.1f} messages per busy replica (queue.ack_pending / replicas over {len(loaded)} "
                   "decisions with messages pending: workers that prefetch); the replay's readings count as many as the log's at that time")
    if ups or downs:
        how.append(f"executor: a scale-up took {start_call:.1f} s, a scale-in {stop_s:.1f} s (medians of {len(ups)} and "
                   f"{len(downs)} outcomes): the loop waits for it, and a replica being stopped costs until then")
    how.append("gaps: none" if not gaps else "gaps: " + ", ".join(f"{dt:.0f} s at {t:.0f} s" for t, dt in gaps[:5])
               + (f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""))

    unknown.append("when in an interval each message arrived: spread evenly over its seconds")
    if gaps:
        unknown.append("how arrivals were spread inside a gap, and what the queue did while no decision was logged")
    if lower:
        unknown.append(f"completions in {lower} intervals without queue.rate_out: their arrivals are lower bounds")
    unknown.append(f"how service times vary: only averages are logged (cv {cv:g} assumed, --cv); the service time "
                   "when replicas were not all busy (taken to be the same)")
    if startup_how.startswith("startup_delay"):
        unknown.append("start-up time: no scale-up with messages queued throughout shows when new replicas took work")
    unknown.append("messages that arrived after the last decision, and what replicas did between two readings")

    actual, actions = _actual(all_readings, start, end)
    return Rebuilt(
        service=service, trace=trace, scenario=scenario, initial=usable[0].current, start=start, end=end, readings=len(usable),
        interval_s=interval, start_call_s=start_call,
        knots=(times, cumulative), first_rates={k: v for k, v in usable[0].obs.items() if k in ("queue.rate_in", "queue.rate_out")},
        held_per_replica=held, held_at=[(x.t - start, x.obs["queue.ack_pending"] / x.obs["replicas.running"]) for x in loaded],
        how=how, unknown=unknown, actual_replica_seconds=actual, actual_actions=actions,
        history=[(x.t - start, x.current, x.obs) for x in all_readings if start - HISTORY_S <= x.t < start],
        ticks=[x.t - start for x in all_readings if start <= x.t <= end],
    )


def spread(name: str, times: list[float], cumulative: list[float], duration: int) -> Trace:
    """A per-second trace from cumulative arrivals at ``times`` (seconds from the start): each
    interval's arrivals evenly over its seconds; what had arrived by the first time, in second 0."""
    grid = np.interp(np.arange(duration + 1, dtype=float), np.array(times), np.array(cumulative))
    grid[0] = 0.0
    counts = np.maximum(np.diff(np.round(grid)), 0).astype(np.int64)
    return Trace(name, counts)


def arrivals_workload(rebuilt: Rebuilt) -> Workload:
    """The replay's messages: arrival times drawn from the rebuilt arrivals curve itself, not from
    its per-second counts (an onset 0.6 s into an interval stays there; what was queued at the
    first reading arrives at 0 s, where the first tick sees it), service times as
    :func:`~docktor.agent.sim.simulator.workload` draws them."""
    scenario, n = rebuilt.scenario, rebuilt.trace.messages
    if rebuilt.knots is None:
        return workload(rebuilt.trace, scenario)
    times, cum = np.array(rebuilt.knots[0]), np.array(rebuilt.knots[1])
    rng = np.random.default_rng(scenario.seed)
    queued = min(n, int(round(float(cum[0]))))
    u = float(cum[0]) + np.sort(rng.random(n - queued)) * float(cum[-1] - cum[0])
    i = np.clip(np.searchsorted(cum, u, side="right"), 1, len(cum) - 1)
    c0, c1, t0, t1 = cum[i - 1], cum[i], times[i - 1], times[i]
    frac = np.divide(u - c0, c1 - c0, out=np.zeros_like(u), where=c1 > c0)
    arrivals = np.concatenate([np.zeros(queued), t0 + np.clip(frac, 0.0, 1.0) * (t1 - t0)])
    if scenario.cv == 0:
        service = np.full(n, scenario.service_s)
    else:
        shape = 1.0 / scenario.cv**2
        service = rng.gamma(shape, scenario.service_s / shape, n)
    return Workload(np.sort(arrivals), service)


def _settled(usable: list[Reading], all_readings: list[Reading], startup_s: float) -> list[Reading]:
    """``usable`` from the first reading made at least ``startup_s`` after the last change before
    it: a replay starts with its replicas ready, so it starts where the log's were."""
    changes = [x.t for x in all_readings if x.executed_ok and x.target is not None and x.target != x.current]
    for i, x in enumerate(usable):
        before = [t for t in changes if t < x.t]
        if not before or x.t - before[-1] >= startup_s:
            return usable[i:]
    return []


def _onset(a: Reading, b: Reading, service_s: float) -> float:
    """Seconds into the interval ``a`` -> ``b`` before its arrivals began, when it began with an
    empty queue and ended with messages pending: the replicas were busy from then on, so the
    completions (``rate_out`` x the interval x the service time) are their busy time. 0 otherwise."""
    rate_out, running = b.obs.get("queue.rate_out"), a.obs.get("replicas.running", float(a.current))
    if (a.queued or 0.0) > 0 or b.obs.get("queue.pending", 0.0) <= 0 or rate_out is None or running <= 0:
        return 0.0
    dt = b.t - a.t
    busy = rate_out * dt * service_s / running
    return min(dt, max(0.0, dt - busy))


def _service_time(usable: list[Reading], svc: ServiceConfig) -> tuple[float | None, str]:
    busy_time = done = 0.0
    intervals = 0
    changed_at = -math.inf
    best_rate = 0.0
    for a, b in zip(usable, usable[1:]):
        rate_out = b.obs.get("queue.rate_out")
        running = a.obs.get("replicas.running", float(a.current))
        if a.executed_ok and a.target is not None and a.target != a.current:
            changed_at = a.t
        if rate_out is None or running <= 0:
            continue
        saturated = (a.obs.get("queue.pending", 0.0) > 0 and b.obs.get("queue.pending", 0.0) > 0
                     and a.t - changed_at >= svc.startup_delay and b.current == a.current == running)
        if saturated and rate_out > 0:
            busy_time += running * (b.t - a.t)
            done += rate_out * (b.t - a.t)
            intervals += 1
        elif a.obs.get("queue.ack_pending", 0.0) > 0 or a.obs.get("queue.pending", 0.0) > 0:
            best_rate = max(best_rate, rate_out / running)
    if done > 0:
        return busy_time / done, (f"replicas / queue.rate_out over {intervals} intervals with messages pending "
                                  "throughout and the count steady")
    if svc.processing_time is not None:
        return svc.processing_time, "processing_time in the config: no interval had every replica busy"
    if best_rate > 0:
        return 1.0 / best_rate, ("the best per-replica throughput seen; no interval had every replica busy, "
                                 "so this is an upper bound")
    return None, ""


def _startup(usable: list[Reading], service_s: float, configured: float) -> tuple[float, str]:
    """Seconds a new replica took before it worked, from scale-ups with messages pending throughout
    the interval after them: the completions beyond what the old replicas did are the new ones'
    work, so each new replica worked ``(done / rate - old x dt) / new`` of the ``dt``."""
    found: list[float] = []
    for a, b in zip(usable, usable[1:]):
        rate_out = b.obs.get("queue.rate_out")
        if not (a.executed_ok and a.target is not None and a.target > a.current and rate_out is not None):
            continue
        if a.obs.get("queue.pending", 0.0) <= 0 or b.obs.get("queue.pending", 0.0) <= 0 or b.current != a.target:
            continue
        dt = b.t - a.t
        worked = (rate_out * dt * service_s - a.current * dt) / (a.target - a.current)
        found.append(min(dt, max(0.0, dt - worked)))
    if not found:
        return configured, "startup_delay in the config: not measurable from this log"
    return statistics.median(found), (f"measured: the median of {len(found)} scale-ups with messages queued, from the work "
                                      f"the new replicas did; startup_delay in the config, {configured:g} s, is what the policy plans with")


def _actual(all_readings: list[Reading], start: float, end: float) -> tuple[float, int]:
    """Replica-seconds and actions between the first and the last reading, as the log says.

    From a record on, its ``current_replicas`` run; an executed scale-up's target from the
    decision, an executed scale-in's from its outcome (until then the stopped ones still run).
    """
    cost = 0.0
    actions = 0
    inside = [x for x in all_readings if start <= x.t <= end]
    for i, x in enumerate(inside[:-1]):
        nxt = inside[i + 1].t
        count = x.current
        if x.executed_ok and x.target is not None and x.target != x.current:
            actions += 1
            if x.target > x.current:
                count = x.target
            else:
                until = min(nxt, x.outcome_t if x.outcome_t is not None else x.t)
                cost += x.current * (until - x.t)
                cost += x.target * (nxt - until)
                continue
        cost += count * (nxt - x.t)
    return cost, actions


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
