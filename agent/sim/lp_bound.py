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

with ``L = ceil(startup_s)`` and the same relaxation of arrivals and deadlines as the oracle
(fluid work released at the start of its arrival second, due by the end of second
``a + 1 + slo + max(s)``; only work due inside the trace counts). Every real schedule gives a
feasible point (its average paid and ready counts per second: a replica ready at time u was
alive over all of ``[u - startup, u]``), so the LP's optimum is below any of them, for schedules
that start as the simulated controllers do, from ``min_replicas`` ready (``static`` starts at its
fixed count, and is far above either bound). Whole replicas are not required, nor is
``max_replicas`` kept: it is a bound, not a schedule.

scipy (HiGHS) solves it. It is a benchmark-only dependency (``pip install 'docktor[bench]'``);
without it :func:`lp_bound` returns None and ``docktor bench`` says "needs scipy".
"""

from __future__ import annotations

import math

import numpy as np

from docktor.agent.sim.simulator import Scenario, Workload
from docktor.agent.sim.trace_file import Trace


def available() -> bool:
    try:
        import scipy.optimize
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


def lp_bound(trace: Trace, scenario: Scenario, load: Workload) -> float | None:
    """The LP's optimum (replica-seconds over the trace), or None without scipy."""
    try:
        from scipy.optimize import linprog
        from scipy.sparse import coo_matrix, vstack
    except ImportError:
        return None
    T = len(trace.rates)
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
    lag = math.ceil(scenario.startup_s - 1e-9)
    base = float(scenario.min_replicas)
    # variables: n (T), a (T), p (T), P (T)
    N, A, Pd, C = 0, T, 2 * T, 3 * T
    # a_t - n_{t-k} <= 0 for k = 0..lag where t - k >= 0; before the trace only the min_replicas
    # were running, so a_t <= base while t < lag
    ts = [np.arange(k, T) for k in range(lag + 1)]
    n_ub = sum(t.size for t in ts)
    at_rows = np.arange(n_ub)
    le = coo_matrix(
        (
            np.concatenate([np.ones(n_ub), -np.ones(n_ub)]),
            (np.tile(at_rows, 2), np.concatenate([A + np.concatenate(ts), N + np.concatenate([t - k for k, t in enumerate(ts)])])),
        ),
        shape=(n_ub, 4 * T),
    )
    ub_a = np.full(T, np.inf)
    ub_a[: min(lag, T)] = base
    # p_t - a_t <= 0
    le_p = coo_matrix(
        (np.concatenate([np.ones(T), -np.ones(T)]), (np.tile(np.arange(T), 2), np.concatenate([Pd + np.arange(T), A + np.arange(T)]))),
        shape=(T, 4 * T),
    )
    a_ub = vstack([le, le_p]).tocsr()
    b_ub = np.zeros(n_ub + T)
    # P_t - P_{t-1} - p_t = 0
    eq_rows = np.concatenate([np.arange(T), np.arange(1, T), np.arange(T)])
    eq_cols = np.concatenate([C + np.arange(T), C + np.arange(T - 1), Pd + np.arange(T)])
    eq_vals = np.concatenate([np.ones(T), -np.ones(T - 1), -np.ones(T)])
    a_eq = coo_matrix((eq_vals, (eq_rows, eq_cols)), shape=(T, 4 * T)).tocsr()
    bounds = (
        [(base, None)] * T
        + [(0.0, float(u) if math.isfinite(u) else None) for u in ub_a]
        + [(0.0, None)] * T
        + [(float(lo), float(hi)) for lo, hi in zip(due, released)]
    )
    cost = np.concatenate([np.ones(T), np.zeros(3 * T)])
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.zeros(T), bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"the LP bound of {trace.name} did not solve: {res.message}")
    return float(res.fun)
