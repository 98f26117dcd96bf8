"""Deadline planning for the ``docktor`` policy: how many replicas so that every message starts in time.

Pure arithmetic over a fluid model of one FIFO queue, at the scale of one decision (tens of
checkpoints, tens of candidate counts), vectorized with numpy.

- **Demand**: the messages that must have *started* by each instant ``u`` seconds from now: the
  ones queued now (each with its own deadline, from when it arrived) and the ones forecast to
  arrive (a message arriving at ``v`` is due at ``v + slo``).
- **Capacity**: replicas start messages at ``mu`` per second each. Until a new replica is ready
  (``startup`` seconds after it was started) only the ready ones serve; the ready count over the
  next start-up delay is known from the running count's history (:class:`Capacity`).
- **Plan**: the count ``n`` to set now, held from now on, or (with ``recourse``) raised once more
  at the next check by at most what the step guardrail allows. Both demand and capacity are
  piecewise linear in ``u``, so checking the breakpoints of either is exact for the fluid model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Demand:
    """Messages due by each checkpoint: ``due[i]`` must have started by ``at[i]`` seconds from now."""

    at: np.ndarray
    due: np.ndarray


@dataclass(frozen=True)
class Capacity:
    """What serves over the plan: ``mu`` per replica, the ready count over time, the start-up delay."""

    mu: float
    #: (from u, replicas ready) steps over the next start-up delay, first at u = 0, non-decreasing;
    #: from ``startup`` on, every running replica is ready
    ready: Sequence[tuple[float, int]]
    running: int
    startup: float

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Breakpoints and ready counts: counts[i] replicas ready on [starts[i], starts[i+1]), the last one on."""
        starts: list[float] = []
        counts: list[float] = []
        for u, c in self.ready:
            if u >= self.startup:
                break
            if starts and u <= starts[-1]:
                counts[-1] = float(c)
            else:
                starts.append(max(0.0, float(u)))
                counts.append(float(c))
        if not starts:
            return np.array([0.0]), np.array([float(self.running)])
        starts[0] = 0.0
        starts.append(self.startup)
        counts.append(float(self.running))
        return np.array(starts, dtype=float), np.array(counts, dtype=float)


def started_by(cap: Capacity, at: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Messages the replicas can start by each of ``at`` if the count is set to each of ``n`` now.

    Scaling in removes replicas still starting first, so the ready ones serve until at most ``n``
    remain; scaling out adds ``n - running`` replicas that serve from ``startup`` on. Shape
    ``(len(n), len(at))``.
    """
    starts, counts = cap.segments()
    ends = np.append(starts[1:], np.inf)
    # time each segment overlaps [0, at]
    overlap = np.clip(at[None, :] - starts[:, None], 0.0, (ends - starts)[:, None])  # (segments, at)
    per_segment = np.minimum(n[:, None], counts[None, :])  # (n, segments)
    ready_work = per_segment @ overlap  # replica-seconds from replicas kept
    added = np.maximum(n - cap.running, 0.0)[:, None] * np.maximum(at[None, :] - cap.startup, 0.0)
    started: np.ndarray = cap.mu * (ready_work + added)
    return started


def fewest_replicas(cap: Capacity, demand: Demand, ceiling: int, from_u: float) -> tuple[int, bool]:
    """The fewest replicas (up to ``ceiling``) that meet every checkpoint at or after ``from_u``.

    Returns (count, feasible). Checkpoints no count up to ``ceiling`` can meet (work already
    too late for any new replica to help) are dropped: the rest still get their replicas.
    """
    keep = demand.at >= from_u
    at, due = demand.at[keep], demand.due[keep]
    if at.size == 0:
        return 0, True
    counts = np.arange(ceiling + 1, dtype=float)
    ok = started_by(cap, at, counts) >= due[None, :] - 1e-9  # (n, at)
    reachable = ok[-1]
    feasible = bool(reachable.all())
    if not reachable.any():
        return ceiling, False
    good = ok[:, reachable].all(axis=1)
    return int(np.argmax(good)), feasible


def growth(counts: np.ndarray, checks: int, step_up: Callable[[np.ndarray], np.ndarray], ceiling: float) -> np.ndarray:
    """Replicas the next ``checks`` decisions could add, each as much as the step guardrail allows.

    ``step_up`` maps counts to the most one decision may add. Shape ``(len(counts), checks)``.
    """
    out = np.zeros((counts.size, checks))
    c = counts.astype(float)
    for k in range(checks):
        nxt = np.minimum(c + step_up(c), np.maximum(ceiling, c))
        out[:, k] = nxt - c
        c = nxt
    return out


def with_recourse(
    cap: Capacity, demand: Demand, ceiling: int, from_u: float, check_times: np.ndarray, added: np.ndarray
) -> tuple[int, bool]:
    """The fewest replicas now, if later checks (at ``check_times``) each add ``added[n, k]`` replicas.

    Those serve from their check's time plus the start-up delay on. This is what a surge not yet
    seen needs now: the part that later decisions, as fast as the guardrails let them scale out,
    cannot absorb in time. Returns (count, feasible).
    """
    keep = demand.at >= from_u
    at, due = demand.at[keep], demand.due[keep]
    if at.size == 0:
        return 0, True
    counts = np.arange(ceiling + 1, dtype=float)
    serve = np.maximum(at[None, :] - check_times[:, None] - cap.startup, 0.0)  # (checks, at)
    later = cap.mu * (added[: counts.size] @ serve)  # (n, at)
    ok = started_by(cap, at, counts) + later >= due[None, :] - 1e-9
    reachable = ok[-1]
    if not reachable.any():
        return ceiling, False
    good = ok[:, reachable].all(axis=1)
    return int(np.argmax(good)), bool(reachable.all())


def queue_deadlines(
    pending: float, times: np.ndarray, rates: np.ndarray, now: float, slo: float, earliest: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Deadlines of the queued messages (seconds from now, oldest first) and how many are due by each.

    The queue is FIFO, so the ``pending`` messages are the last ones to arrive. ``rates[k]`` is
    the arrival rate over ``(times[k-1], times[k]]``; walking back from now, each interval holds
    its share, spread evenly across it, or with ``earliest`` all at the interval's start (the
    oldest they can be: the source counts arrivals per interval, not when within it). Messages
    older than the history are taken to have arrived when it begins (older is the safe side).
    Between two points the count due grows linearly, as ``numpy.interp`` reads it; a point
    given twice is a step, and ``numpy.interp`` reads the higher count there.
    """
    chunks: list[tuple[float, float, float]] = []  # (oldest arrival, newest arrival, count), newest first
    left = pending
    for k in range(len(times) - 1, 0, -1):
        if left <= 1e-9:
            break
        span = float(times[k] - times[k - 1])
        arrived = float(rates[k]) * span
        if span <= 0 or arrived <= 0:
            continue
        take = min(arrived, left)
        if earliest:
            chunks.append((float(times[k - 1]), float(times[k - 1]), take))
        else:
            chunks.append((float(times[k]) - span * take / arrived, float(times[k]), take))
        left -= take
    if left > 1e-9:
        first = float(times[0]) if len(times) else now
        chunks.append((first, first, left))
    xs: list[float] = []
    ys: list[float] = []
    total = 0.0
    for old, new, count in reversed(chunks):
        xs.append(old + slo - now)
        ys.append(total)
        total += count
        xs.append(new + slo - now)
        ys.append(total)
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def demand(
    queue_at: np.ndarray,
    queue_due: np.ndarray,
    slo: float,
    rate_now: float,
    rate_later: float,
    switch: float,
    horizon: float,
    step: float,
    extra_points: Sequence[float] = (),
    burst: float = 0.0,
) -> Demand:
    """Queued messages plus forecast arrivals up to ``horizon``.

    Arrivals: ``burst`` messages at once right now, then ``rate_now`` until ``switch`` seconds
    from now and ``rate_later`` after.
    """
    pts = set(float(x) for x in queue_at if x <= horizon)
    pts.update(float(x) for x in extra_points if 0 <= x <= horizon)
    pts.add(horizon)
    pts.add(slo)
    pts.add(slo + switch)
    k = 1
    while slo + k * step < horizon:
        pts.add(slo + k * step)
        k += 1
    at = np.array(sorted(p for p in pts if p >= 0 and p <= horizon), dtype=float)
    queued = np.interp(at, queue_at, queue_due, left=0.0, right=float(queue_due[-1])) if queue_at.size else np.zeros_like(at)
    v = np.maximum(at - slo, 0.0)  # arrivals due by u arrived by u - slo
    arrivals = rate_now * np.minimum(v, switch) + rate_later * np.maximum(v - switch, 0.0)
    arrivals += np.where(at >= slo, burst, 0.0)
    return Demand(at, queued + arrivals)
