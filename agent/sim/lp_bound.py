"""A start-up-aware lower bound on any schedule's replica-seconds: a linear program over the trace.

:func:`docktor.agent.sim.baselines.oracle_replica_seconds` bills only the work; a replica that
serves at second ``t`` was also paid for the ``startup_s`` seconds before. This bound adds that:

    minimise   sum_t n_t                         (replica-seconds paid, second by second)
    subject to n_t >= min_replicas
               a_t <= n_{t-k}  for k = 0 .. L    (a replica ready in second t was paid since t - L;
                                                  before the trace, only the min_replicas ready ones)
               0 <= p_t <= a_t                   (work done in second t, by the ready replicas)
               P_t = P_{t-1} + p_t               (work done so far)
               P_t <= released by the end of t   (no work before its message arrives)
               P_t >= due by the end of t        (every message started within the SLO)

with ``L = floor(startup_s)`` (a replica ready part-way through second ``t`` after a fractional
start-up was alive for at least that part of second ``t - floor(startup)``, not of the one
before) and the same relaxation of arrivals and deadlines as the oracle
(fluid work released at the start of its arrival second, due by the end of second
``a + 1 + slo + max(s)``; only work due inside the trace counts). No late message is allowed.
Every real schedule gives a feasible point (its average paid and ready counts per second: a
replica ready at time u was alive over all of ``[u - startup, u]``), so the LP's optimum is below
any of them, for schedules that start as the simulated controllers do, from ``min_replicas``
ready (``static`` starts at its fixed count, and is far above either bound). Whole replicas are
not required, nor is ``max_replicas`` kept: it is a bound, not a schedule.

**The interval-aware bound** (``decision_times``): the least any controller spends that can
change its count only at those times (whole seconds; the simulator's ticks ``0, I, 2I, ...``).
It is the same LP with what a tick-bound controller cannot avoid, each a property of every run of
:func:`~docktor.agent.sim.simulator.simulate` (``m_j``: the desired count in block ``j``, from
decision time ``d_j`` to the next; ``g_t``: removed replicas still serving, per second; ``r_j``:
replicas removed at ``d_j``):

- a replica is started only at a tick and is billed from it, so one serving in second ``t`` was
  started at the latest tick ``sigma(t) < t + 1 - startup`` and was paid all along:
  ``a_t <= n_{t-k}`` for ``k = 0 .. t - sigma(t)`` (with a tick every second this is the ``L``
  above);
- the desired count is held between ticks, and every replica in it is paid:
  ``n_t >= m_j + g_t`` and ``a_t <= m_j + g_t`` (ready ones are at most the desired count,
  plus those still finishing a message after their removal);
- a replica removed at tick ``d_j`` finishes only the message it holds: it serves for at most
  the longest service time (stretched by ``cap_rate`` at most to ``max_replicas`` sharing it)
  after ``d_j``, so ``g_t <= sum of r_j`` over the ticks within that time before ``t``, with
  ``r_j <= m_{j-1}``; draining is paid as it serves (a lower bound need not charge ``stop_s``);
- replicas started at ``d_j`` are not ready before ``d_j + startup``, so until then the ready
  ones in the desired count are the survivors of the block before: ``a_t <= m_{j-1} - r_j + g_t``
  (a tick scales one way: up, ``r_j = 0``; down, no replica is started).

The LP lets a removed replica serve any work in its time, not only its own message, and pays
nothing for ``stop_s``: both only lower it. A controller with more ticks can do all a controller
with fewer can (it keeps its count at the extra ones), and the LP follows: adding decision times
never raises it, and with a tick every second it is the bound above (the new constraints hold at
its optimum with ``m_t = n_t``, nothing removed: ``a_t <= n_t, n_{t-1}`` are already there).
Before the first decision time, if it is after 0, the count is ``min_replicas``.

scipy (HiGHS) solves it. It is a benchmark-only dependency (``pip install 'docktor[bench]'``);
without it :func:`lp_bound` returns None and ``docktor bench`` says "needs scipy".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from docktor.agent.core.schedule import due
from docktor.agent.sim.simulator import Scenario, Workload
from docktor.agent.sim.trace_file import Trace


def available() -> bool:
    try:
        import scipy.optimize
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


class NoScheduleInTime(Exception):
    """The LP is infeasible: no schedule at all starts every message within the SLO (the load
    before the first start-up could finish is more than ``min_replicas`` serve in time), so there
    is no least cost of doing so to bound a run by."""


def check_times(duration_s: float, interval_s: float, *, warm_up: bool = False) -> np.ndarray:
    """The simulator's ticks inside a trace, ``0, I, 2I, ...`` (with ``warm_up``, Docktor's own
    controllers' warm-up read at 5 s too: :mod:`docktor.agent.core.schedule`), for
    :func:`lp_bound`'s ``decision_times``."""
    times, k = [], 0
    while (t := due(0.0, interval_s, k, warm_up=warm_up)) < duration_s:
        times.append(t)
        k += 1
    return np.array(times, dtype=float)


@dataclass
class _Rows:
    """``A x <= 0`` rows of a sparse matrix, added a block of rows at a time."""

    rows: list[np.ndarray] = field(default_factory=list)
    cols: list[np.ndarray] = field(default_factory=list)
    vals: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add(self, n: int, *terms: tuple[np.ndarray, float]) -> None:
        """``n`` rows; each term is (the column of each row, its coefficient)."""
        at = self.count + np.arange(n)
        for cols, coef in terms:
            self.rows.append(at)
            self.cols.append(np.asarray(cols, dtype=np.int64))
            self.vals.append(np.full(n, coef))
        self.count += n


def _ticks(decision_times: np.ndarray, T: int) -> np.ndarray:
    times = np.asarray(decision_times, dtype=float)
    if times.ndim != 1 or np.any(np.diff(times) <= 0):
        raise ValueError("decision_times: must be a sorted 1-d array without repeats")
    if np.any(times != np.round(times)) or np.any(times < 0):
        raise ValueError("decision_times: must be whole seconds >= 0 (the LP is solved per second)")
    ticks: np.ndarray = times[times < T].astype(np.int64)
    return ticks


def lp_bound(trace: Trace, scenario: Scenario, load: Workload, decision_times: np.ndarray | None = None) -> float | None:
    """The LP's optimum (replica-seconds over the trace), or None without scipy.

    ``decision_times``: the only seconds a controller may change its count at (sorted whole
    seconds, e.g. :func:`check_times`); None: any second, the start-up-aware bound."""
    T = len(trace.rates)
    ticks = None if decision_times is None else _ticks(decision_times, T)
    try:
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix
    except ImportError:
        return None
    if T == 0:
        return 0.0
    work = np.zeros(T)
    if load.arrivals.size:
        work[:] = np.bincount(load.arrivals.astype(int), weights=load.service, minlength=T)[:T]
    max_s = float(load.service.max()) if load.service.size else 0.0
    due_after = math.ceil(1 + scenario.slo_s + max_s)
    released = np.cumsum(work)
    due = np.zeros(T)
    if due_after - 1 < T:
        # work released in second u is due by the end of second u + due_after - 1
        due[due_after - 1 :] = released[: T - due_after + 1]
    base = float(scenario.min_replicas)
    seconds = np.arange(T)
    # the latest second a replica serving in second t can have been started at (-1: none, only
    # the min_replicas ready from the start)
    if ticks is None:
        lag = math.floor(scenario.startup_s + 1e-9)
        started_by = np.where(seconds >= lag, seconds - lag, -1)
    else:
        idx = np.searchsorted(ticks, seconds + 1 - scenario.startup_s, side="left") - 1
        started_by = np.where(idx >= 0, ticks[np.maximum(idx, 0)], -1)
    # variables: n, a, p, P, g (T each; g stays 0 without decision times), then m and r (one per block)
    N, A, Pd, C = 0, T, 2 * T, 3 * T
    le = _Rows()
    # a_t - n_{t-k} <= 0 for k = 0 .. t - started_by(t) (or .. t when none was started by then)
    kmax = np.where(started_by >= 0, seconds - started_by, seconds)
    t_rep = np.repeat(seconds, kmax + 1)
    k_rep = np.arange(t_rep.size) - np.repeat(np.cumsum(kmax + 1) - (kmax + 1), kmax + 1)
    le.add(t_rep.size, (A + t_rep, 1.0), (N + t_rep - k_rep, -1.0))
    le.add(T, (Pd + seconds, 1.0), (A + seconds, -1.0))  # p_t - a_t <= 0
    n_var = 5 * T
    m_bounds: list[tuple[float, float | None]] = []
    r_bounds: list[tuple[float, float | None]] = []
    if ticks is not None:
        n_var = _add_blocks(le, ticks, T, scenario, max_s, base, m_bounds, r_bounds)
    # P_t - P_{t-1} - p_t = 0
    eq_rows = np.concatenate([seconds, np.arange(1, T), seconds])
    eq_cols = np.concatenate([C + seconds, C + np.arange(T - 1), Pd + seconds])
    eq_vals = np.concatenate([np.ones(T), -np.ones(T - 1), -np.ones(T)])
    a_eq = coo_matrix((eq_vals, (eq_rows, eq_cols)), shape=(T, n_var)).tocsr()
    a_ub = coo_matrix(
        (np.concatenate(le.vals), (np.concatenate(le.rows), np.concatenate(le.cols))), shape=(le.count, n_var)
    ).tocsr()
    bounds = (
        [(base, None)] * T
        + [(0.0, None if s >= 0 else base) for s in started_by]
        + [(0.0, None)] * T
        + [(float(lo), float(hi)) for lo, hi in zip(due, released)]
        + [(0.0, None if ticks is not None else 0.0)] * T
        + m_bounds
        + r_bounds
    )
    cost = np.zeros(n_var)
    cost[:T] = 1.0
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(le.count), A_eq=a_eq, b_eq=np.zeros(T), bounds=bounds, method="highs")
    if res.status == 2:
        raise NoScheduleInTime(
            f"no schedule starts every message of {trace.name} in time: before a start-up of"
            f" {scenario.startup_s:g} s, {scenario.min_replicas} replica(s) cannot serve what comes first"
        )
    if res.status != 0:
        raise RuntimeError(f"the LP bound of {trace.name} did not solve: {res.message}")
    return float(res.fun)


def _add_blocks(
    le: _Rows,
    ticks: np.ndarray,
    T: int,
    scenario: Scenario,
    max_s: float,
    base: float,
    m_bounds: list[tuple[float, float | None]],
    r_bounds: list[tuple[float, float | None]],
) -> int:
    """The rows of a controller that changes its count only at ``ticks`` (the module's docstring);
    fills the bounds of m and r and returns the number of variables."""
    N, A, G = 0, T, 4 * T
    seconds = np.arange(T)
    # blocks: [0, first tick) held at min_replicas when the first tick is after 0, then one per tick
    starts = ticks if ticks.size and ticks[0] == 0 else np.concatenate([[0], ticks]).astype(np.int64)
    held = int(not (ticks.size and ticks[0] == 0))
    B = starts.size
    M, R = 5 * T, 5 * T + B
    block = np.searchsorted(starts, seconds, side="right") - 1
    m_bounds.extend([(base, base if j < held else None) for j in range(B)])
    # no replica is removed at the start: min_replicas are all there is, and none can go
    r_bounds.extend([(0.0, 0.0 if j == 0 else None) for j in range(B)])
    # n_t >= m_j + g_t; a_t <= m_j + g_t
    le.add(T, (M + block, 1.0), (G + seconds, 1.0), (N + seconds, -1.0))
    le.add(T, (A + seconds, 1.0), (M + block, -1.0), (G + seconds, -1.0))
    # r_j <= m_{j-1}
    later = np.arange(1, B)
    le.add(later.size, (R + later, 1.0), (M + later - 1, -1.0))
    # the survivors: a_t - g_t <= m_{j-1} - r_j for the seconds wholly inside [d_j, d_j + startup)
    whole = math.floor(scenario.startup_s + 1e-9)
    if whole > 0 and later.size:
        j_rep = np.repeat(later, whole)
        t_rep = starts[j_rep] + np.tile(np.arange(whole), later.size)
        inside = t_rep < T
        j_rep, t_rep = j_rep[inside], t_rep[inside]
        le.add(t_rep.size, (A + t_rep, 1.0), (G + t_rep, -1.0), (M + j_rep - 1, -1.0), (R + j_rep, 1.0))
    # draining: g_t <= sum of r_j over the ticks whose removed replicas may still serve in second t
    stretch = 1.0 if scenario.cap_rate is None else max(1.0, scenario.max_replicas / (scenario.cap_rate * scenario.service_s))
    span = math.ceil(max_s * stretch - 1e-12)
    le.add(T, (G + seconds, 1.0))
    first_row = le.count - T
    if span > 0 and later.size:
        j_rep = np.repeat(later, span)
        t_rep = starts[j_rep] + np.tile(np.arange(span), later.size)
        inside = t_rep < T
        j_rep, t_rep = j_rep[inside], t_rep[inside]
        le.rows.append(first_row + t_rep)
        le.cols.append(R + j_rep)
        le.vals.append(-np.ones(t_rep.size))
    return 5 * T + 2 * B
