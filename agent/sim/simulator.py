"""Trace-driven queue simulator: replays arrivals against a scaling controller, message by message.

Model (docs/policy.md has the long form):

- Arrivals: a trace gives the messages arriving in each second; their times are spread uniformly
  at random inside the second. Service times are gamma-distributed with the scenario's mean and
  coefficient of variation (deterministic when cv is 0), drawn per message in arrival order.
  Both come from one seeded generator, so every policy sees the same messages (common random
  numbers) and results are reproducible.
- Replicas serve one message at a time from a single FIFO queue: message i starts at
  ``max(arrival_i, earliest free replica)`` (Kiefer-Wolfowitz recursion on a heap of free times),
  so waits are exact per message, not a fluid approximation.
- A new replica takes work ``startup_s`` after it is started; it costs from the moment it is
  started. Scale-in removes replicas still starting first (newest first, like Compose), then
  idle ones, then the busy ones closest to finishing; a removed busy replica finishes its current
  message (and costs until then, or until ``stop_s`` after its stop when that is later).
- The controller sees the queue only at its checks, through the metrics the NATS source
  produces: ``queue.pending`` (not yet delivered), ``queue.ack_pending`` (in flight),
  ``queue.backlog`` (their sum), ``queue.rate_in`` / ``queue.rate_out`` from the deltas of the
  stream's last sequence and the ack floor between two consecutive reads (absent on the first),
  and ``replicas.running`` / ``replicas.desired`` as an executor reports them; and
  ``queue.oldest_age``, how long the first message not yet started has waited (exact: the queue
  is FIFO and every arrival time is known). The checks fall where the daemon's loop runs them
  (``agent/core/schedule.py``, the same function): on the grid ``k x interval``, plus, for a
  controller with ``warm_up`` (Docktor's own loop: its NATS source reports rates), the warm-up
  read ``min(interval, WARM_UP_S)`` after the first, so that a rate is seen early.
- Two faults a healthy fleet does not have (``Scenario.drift``, ``Scenario.cap_rate``): from the
  trace's midpoint on every message takes ``drift`` times as long (a deploy made the workers
  slower); and a downstream limit (a saturated database) lets all replicas together complete at
  most ``cap_rate`` messages per second: with more ready replicas than ``cap_rate x service_s``,
  each message started takes proportionally longer, so no replica count lifts the output.
- Cost is counted over the trace's duration; the simulation goes on past its end (controller
  still ticking) until every message has started, so each message has a wait.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from docktor.agent.core.schedule import due
from docktor.agent.sim.scenario import Scenario, Workload, workload
from docktor.agent.sim.trace_file import Trace

__all__ = ["Controller", "Counters", "Limits", "MetricReader", "Run", "Scenario", "Workload", "remaining_work_floor", "simulate", "workload"]

#: direction changes closer together than this count as reversals (ServiceConfig's cooldown_down default)
REVERSAL_WINDOW_S = 60.0
#: how long past the trace's end the simulation may run to let the queue drain
DRAIN_LIMIT_S = 3600.0


# --------------------------------------------------------------------------- controllers


@dataclass(frozen=True)
class Counters:
    """What one read of the queue returns, before rates: the JetStream counters."""

    now: float
    last_seq: int  # messages published so far
    ack_floor: int  # messages acknowledged so far
    pending: int  # not yet delivered
    ack_pending: int  # delivered, not yet acknowledged
    running: int  # replicas running (including those still starting)
    desired: int
    #: seconds the oldest message not yet started has waited (0: none waiting)
    oldest_age: float = 0.0


class Controller(Protocol):
    name: str
    interval: float
    #: whether its checks have the daemon's warm-up read (agent/core/schedule.py): Docktor's own
    #: loop does; the HPA and KEDA do not (read with getattr: a stand-in may leave it out)
    warm_up: bool

    def initial(self, scenario: Scenario, trace: Trace) -> int: ...

    def tick(self, obs: dict[str, float], current: int, now: float) -> int: ...


class MetricReader:
    """Turns counters into observations the way tools/nats_source.py does (rates from deltas)."""

    def __init__(self) -> None:
        self._prev: Counters | None = None

    def read(self, c: Counters) -> dict[str, float]:
        obs = {
            "queue.pending": float(c.pending),
            "queue.ack_pending": float(c.ack_pending),
            "queue.backlog": float(c.pending + c.ack_pending),
            "queue.lag": float(c.pending),
            "replicas.running": float(c.running),
            "replicas.desired": float(c.desired),
            "replicas.failed": 0.0,
            "queue.oldest_age": float(c.oldest_age),
        }
        prev = self._prev
        if prev is not None and c.now > prev.now:
            elapsed = c.now - prev.now
            obs["queue.rate_in"] = (c.last_seq - prev.last_seq) / elapsed
            obs["queue.rate_out"] = (c.ack_floor - prev.ack_floor) / elapsed
        self._prev = c
        return obs


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    trace: str
    policy: str
    scenario: Scenario
    waits: np.ndarray
    replica_seconds: float
    actions: int
    reversals: int
    #: per check: (time, desired replicas after the decision, alive replicas incl. draining)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    #: backlog (arrived - completed) at each whole second of the trace
    backlog: np.ndarray = field(default_factory=lambda: np.zeros(0))
    decisions: list[dict[str, object]] = field(default_factory=list)
    #: what a tuned baseline chose (hpa-tuned: target_per_replica), reported with the summary
    params: dict[str, float] = field(default_factory=dict)
    #: stopped early by :class:`Limits`: the figures cover only part of the trace
    aborted: bool = False

    @property
    def messages(self) -> int:
        return int(self.waits.size)

    def summary(self, oracle_replica_seconds: float | None = None) -> dict[str, object]:
        s = self.scenario
        n = self.messages
        work = n * s.service_s
        att = float(np.mean(self.waits <= s.slo_s)) if n else 1.0
        p50 = float(np.percentile(self.waits, 50)) if n else 0.0
        p99 = float(np.percentile(self.waits, 99)) if n else 0.0
        out: dict[str, object] = {
            "trace": self.trace,
            "policy": self.policy,
            "messages": n,
            "slo_attainment": round(att, 6),
            "p50_wait_s": round(p50, 3),
            "p99_wait_s": round(p99, 3),
            "max_backlog": int(self.backlog.max()) if self.backlog.size else 0,
            "replica_seconds": round(self.replica_seconds, 1),
            "work_seconds": round(work, 1),
            "oracle_replica_seconds": None if oracle_replica_seconds is None else round(oracle_replica_seconds, 1),
            "cost_ratio": None
            if not oracle_replica_seconds
            else round(self.replica_seconds / oracle_replica_seconds, 3),
            "actions": self.actions,
            "reversals": self.reversals,
            #: the most replicas alive at any check (where a throughput cap stopped a policy, or did not)
            "peak_replicas": max((alive for _, _, alive in self.timeline), default=0),
            **self.params,
        }
        return out


@dataclass(frozen=True)
class Limits:
    """When a run can stop early because it can no longer matter (a search over settings).

    It stops as soon as its replica-seconds exceed ``max_cost`` or more than ``max_misses``
    messages have waited (or are already waiting) longer than the SLO. Both only grow during a
    run, so an aborted run would have ended above the limit too.
    """

    max_cost: float = math.inf
    max_misses: float = math.inf
    #: cost_floor[t]: replica-seconds any run within ``max_misses`` must still spend after second t
    #: (see :func:`remaining_work_floor`); with it a run stops as soon as it cannot end below max_cost
    cost_floor: np.ndarray | None = None

    def floor_after(self, now: float) -> float:
        if self.cost_floor is None or not self.cost_floor.size:
            return 0.0
        return float(self.cost_floor[min(int(math.ceil(now)), self.cost_floor.size - 1)])


def remaining_work_floor(trace: Trace, scenario: Scenario, load: Workload, misses: int) -> np.ndarray:
    """Per second t: a lower bound on the replica-seconds any run with at most ``misses`` late messages spends after t.

    A message arriving at a >= t that starts within the SLO and would finish inside the trace
    (a + slo + s <= end) is served entirely inside [t, end], and a replica costs while it serves.
    At most ``misses`` of them may be late, and those cannot do more than ``misses`` times the
    longest service time of work. (The minimum replicas' own cost is a second floor.)
    """
    end = trace.duration
    due_inside = load.arrivals + scenario.slo_s + load.service <= end
    per_second = np.bincount(load.arrivals[due_inside].astype(int), weights=load.service[due_inside], minlength=int(end) + 1)
    after = np.cumsum(per_second[::-1])[::-1]
    slack = misses * (float(load.service.max()) if load.service.size else 0.0)
    idle = scenario.min_replicas * np.maximum(0.0, end - np.arange(after.size, dtype=float))
    floor: np.ndarray = np.maximum(after - slack, idle)
    return floor


def simulate(
    trace: Trace,
    scenario: Scenario,
    controller: Controller,
    *,
    load: Workload | None = None,
    record_decisions: bool = False,
    limits: Limits | None = None,
) -> Run:
    scenario.check()
    w = load if load is not None else workload(trace, scenario)
    arr = w.arrival_list
    svc = w.service_list
    n = len(arr)
    starts = [0.0] * n
    end_of_trace = trace.duration
    interval = controller.interval
    warm_up = bool(getattr(controller, "warm_up", False))

    reader = MetricReader()
    initial = _bounded(controller.initial(scenario, trace), scenario)
    heap: list[float] = [0.0] * initial  # free times of replicas (starting ones: their ready time)
    starting: list[float] = []  # sorted ready times of replicas not yet ready
    draining: list[float] = []  # finish times of removed replicas still serving their message
    desired = initial
    cost = 0.0
    actions = 0
    reversals = 0
    last_dir = 0
    last_change_at = -math.inf
    timeline: list[tuple[float, int, int]] = []
    decisions: list[dict[str, object]] = []
    i = 0
    tick = 0
    hpush, hreplace = heapq.heappush, heapq.heapreplace
    slo = scenario.slo_s
    missed = 0  # started after waiting longer than the SLO (counted only under limits)
    aborted = False
    while True:
        now = due(0.0, interval, tick, warm_up=warm_up)
        if now >= end_of_trace and i >= n:
            break
        if now > end_of_trace + DRAIN_LIMIT_S:
            break
        if limits is not None:
            overdue = bisect.bisect_left(arr, now - slo) - i  # not started, already late
            if cost + limits.floor_after(now) > limits.max_cost or missed + max(0, overdue) > limits.max_misses:
                aborted = True
                break
        # --- observe
        arrived = bisect.bisect_right(arr, now)
        while starting and starting[0] <= now:
            starting.pop(0)
        draining = [f for f in draining if f > now]
        busy = sum(1 for f in heap if f > now) - len(starting) + len(draining)
        counters = Counters(
            now=now,
            last_seq=arrived,
            ack_floor=i - busy,
            pending=arrived - i,
            ack_pending=busy,
            running=len(heap) + len(draining),  # a stopping container runs until its message is done
            desired=desired,
            oldest_age=now - arr[i] if i < arrived else 0.0,
        )
        # --- decide
        target = _bounded(controller.tick(reader.read(counters), desired, now), scenario)
        if record_decisions:
            decisions.append({"t": now, "current": desired, "target": target})
        if target != desired:
            actions += 1
            direction = 1 if target > desired else -1
            if last_dir and direction != last_dir and now - last_change_at < REVERSAL_WINDOW_S:
                reversals += 1
            last_dir, last_change_at = direction, now
            if target > desired:
                ready = now + scenario.startup_s
                for _ in range(target - desired):
                    hpush(heap, ready)
                    if ready > now:
                        bisect.insort(starting, ready)
            else:
                finishing = _remove(heap, starting, draining, desired - target, now)
                if now < end_of_trace:
                    stopped = min(now + scenario.stop_s, end_of_trace)  # idle ones cost until stopped
                    cost += sum(min(max(f, stopped), end_of_trace) - now for f in finishing)
                    cost += (desired - target - len(finishing)) * (stopped - now)
            desired = target
        # --- cost until the next check (only inside the trace), plus removed replicas' last messages
        nxt = due(0.0, interval, tick + 1, warm_up=warm_up)
        if now < end_of_trace:
            span = min(nxt, end_of_trace) - now
            cost += len(heap) * span
        timeline.append((now, desired, len(heap) + len(draining)))
        # --- a downstream limit: the ready replicas share cap_rate, each message stretched to fit
        stretch = 1.0
        if scenario.cap_rate is not None:
            ready_now = len(heap) - len(starting)  # those ready by now were popped above
            stretch = max(1.0, ready_now / (scenario.cap_rate * scenario.service_s))
        # --- serve every message that starts before the next check
        if heap:
            first = i
            while i < n:
                a = arr[i]
                f = heap[0]
                s = a if a > f else f
                if s >= nxt:
                    break
                hreplace(heap, s + svc[i] * stretch)
                starts[i] = s
                i += 1
            if limits is not None and i > first:
                missed += sum(1 for k in range(first, i) if starts[k] - arr[k] > slo)
        tick += 1

    if aborted:
        # whoever set the limits discards this run: skip the per-message figures
        waits = backlog = np.zeros(0)
    else:
        start_arr = np.array(starts)
        if i < n:
            # never started within the drain limit: their wait is at least until the end
            start_arr[i:] = max(now, end_of_trace)
        waits = start_arr - w.arrivals
        backlog = _backlog_per_second(w, start_arr, end_of_trace)
    return Run(
        trace=trace.name,
        policy=controller.name,
        scenario=scenario,
        waits=waits,
        replica_seconds=cost,
        actions=actions,
        reversals=reversals,
        timeline=timeline,
        backlog=backlog,
        decisions=decisions,
        aborted=aborted,
    )


def _bounded(target: int, scenario: Scenario) -> int:
    """A controller's count, held inside the scenario's ``[min_replicas, max_replicas]``.

    Every executor Docktor drives refuses to go outside the service's bounds, and the oracle
    charges ``min_replicas`` for the whole trace: a controller asking for fewer must not run fewer,
    or it would undercut that bound on an idle trace without being any better.
    """
    return min(max(target, scenario.min_replicas), scenario.max_replicas)


def _remove(heap: list[float], starting: list[float], draining: list[float], k: int, now: float) -> list[float]:
    """Scale in by ``k``: starting replicas first (newest first), then idle, then soonest-finishing busy.

    Returns the finish times of busy replicas that were removed and still serve their message.
    """
    finishing: list[float] = []
    for _ in range(min(k, len(starting))):
        ready = starting.pop()  # the newest
        heap.remove(ready)
        k -= 1
    heap.sort()  # a sorted list is a valid heap
    idle = sum(1 for f in heap if f <= now)
    drop_idle = min(k, idle)
    del heap[:drop_idle]
    k -= drop_idle
    busy = [f for f in heap if f not in starting]
    busy.sort()
    for f in busy[:k]:
        heap.remove(f)
        draining.append(f)
        finishing.append(f)
    heapq.heapify(heap)
    return finishing


def _backlog_per_second(w: Workload, starts: np.ndarray, end: float) -> np.ndarray:
    """Messages arrived but not completed, at each whole second of the trace."""
    grid = np.arange(0.0, end + 1.0)
    arrived = np.searchsorted(w.arrivals, grid, side="right")
    done = np.sort(starts + w.service)
    completed = np.searchsorted(done, grid, side="right")
    return arrived - completed
