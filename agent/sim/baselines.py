"""Controllers the simulator can drive: Docktor's own policies and faithful baselines, plus the oracle.

``docktor``, ``docktor-open`` (``closed_loop: false``), ``rules`` and ``target`` run the production code: :func:`docktor.agent.core.decide.step`
and :func:`docktor.agent.core.decide.remember`, the decision the daemon makes. The others model
other autoscalers (docs/policy.md lists their math):

- ``hpa``: the Kubernetes HPA controller (:mod:`docktor.agent.sim.kube`) on an external
  AverageValue metric (queue backlog, ``HPA_TARGET`` per replica), 15 s sync, tolerance 0.1, with
  the default behavior written out: scale-up per 15 s by the larger of +100 % and +4 pods, no
  scale-up stabilization, scale-down stabilization 300 s.
- ``hpa-tuned``: the same HPA with, per trace, the cheapest per-replica target that still reaches
  the attainment goal in hindsight (:func:`tune_hpa`).
- ``keda``: KEDA as it runs: its HPA without ``spec.behavior`` (the legacy path: max(2 x current,
  4) per sync, the 300 s maximum recommendation taken before that cap), plus the ScaledObject's
  activation (``activationLagThreshold`` 0, polled every 30 s) and ``cooldownPeriod`` 300 s back
  to zero when ``--min`` is 0.
- ``threshold-percent``: every 5 min, backlog > 1000 adds max(1, 20 %), backlog < 100 removes
  max(1, 10 %).
- ``static``: peak provisioning, ``ceil(peak rate * mean service time)`` replicas all along.
- ``oracle``: not a controller but a lower bound on replica-seconds (:func:`oracle_replica_seconds`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from docktor.agent.config.model import Rule, Rules, ServiceConfig
from docktor.agent.core.decide import remember, step
from docktor.agent.core.state import ServiceState
from docktor.agent.sim.advisors import Advisor
from docktor.agent.sim.kube import (
    HPA_SYNC_S,
    KEDA_ACTIVATION_LAG_THRESHOLD,
    KEDA_LAG_THRESHOLD,
    KEDA_POLLING_S,
    Behavior,
    HorizontalController,
    ScaledObject,
)
from docktor.agent.sim.simulator import Limits, Run, Scenario, Workload, remaining_work_floor, simulate
from docktor.agent.sim.trace_file import Trace

#: AverageValue target (backlog per replica) of the hpa, keda and target policies: the value of
#: KEDA's nats-jetstream documentation example (lagThreshold: "10")
HPA_TARGET = KEDA_LAG_THRESHOLD

# ------------------------------------------------------------------ service configs per policy


def docktor_service(scenario: Scenario, policy: str = "docktor") -> ServiceConfig:
    """A service as a user would write it for the scenario, with the policy's default guardrails.

    Only what the scenario says is set (bounds, check interval, SLO, start-up delay, headroom,
    and the ``target`` policy's per-replica target); step limits, cooldowns and stabilization are the
    policy's defaults (``POLICY_DEFAULTS``), so the benchmarks measure exactly what users get.
    """
    return ServiceConfig(
        name="sim",
        policy=policy,  # type: ignore[arg-type]
        min_replicas=scenario.min_replicas,
        max_replicas=scenario.max_replicas,
        check_interval=scenario.interval_s,
        target_wait=scenario.slo_s,
        target_per_replica=HPA_TARGET,
        startup_delay=scenario.startup_s,
        headroom=scenario.headroom,
    )


def rules_service(scenario: Scenario) -> ServiceConfig:
    """The Go Docktor example rules, +2 / -1, no cooldowns and no stabilization."""
    return ServiceConfig(
        name="sim",
        policy="rules",
        min_replicas=scenario.min_replicas,
        max_replicas=scenario.max_replicas,
        check_interval=scenario.interval_s,
        rules=Rules(
            scale_up_when=[Rule(metric="queue.backlog", op=">", value=500), Rule(metric="queue.rate_in", op=">", value=200)],
            scale_down_when=[Rule(metric="queue.backlog", op="<=", value=100), Rule(metric="queue.rate_in", op="<", value=150)],
        ),
        scale_up_by=2,
        scale_down_by=1,
        cooldown_up=0,
        cooldown_down=0,
        scale_down_stabilization=0,
    )


# ------------------------------------------------------------------ controllers


class ProductionController:
    """The daemon's decision: :func:`~docktor.agent.core.decide.step` then ``remember``, per check interval."""

    def __init__(self, name: str, svc: ServiceConfig, advisor: Advisor | None = None, *, warm_up: bool = True) -> None:
        self.name = name
        self.svc = svc
        self.interval = svc.check_interval
        #: the daemon's loop reads a second time WARM_UP_S after its first (the simulated NATS
        #: source reports rates); off for the ``rules`` row, which stands for the Go Docktor
        self.warm_up = warm_up
        self.state = ServiceState()
        self.advisor = advisor

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return self.svc.min_replicas

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        svc, state, advisor = self.svc, self.state, self.advisor
        advise = None if advisor is None else (lambda p: advisor(svc, p, state, now))
        decision = step(svc, obs, current, state, now, advise)
        # The simulated executor never fails, so every change is acted on and succeeds.
        remember(state, decision, now, acted=decision.changes, ok=True, observations=decision.observations)
        return decision.target


class HPAController:
    """A Kubernetes HPA on the queue's backlog as an external ``AverageValue`` metric.

    ``behavior`` None is the legacy path (``normalizeDesiredReplicas``): what an HPA without
    ``spec.behavior`` does, which is how KEDA creates it. A :class:`~docktor.agent.sim.kube.Behavior`
    is the behavior path; ``Behavior()`` is the API server's defaults written out (the ``hpa`` row).
    """

    warm_up = False  # the HPA syncs on its period from the start

    def __init__(
        self,
        scenario: Scenario,
        name: str = "hpa",
        target: float = HPA_TARGET,
        behavior: Behavior | None = Behavior(),  # frozen: one shared default is safe
    ) -> None:
        self.name = name
        self.interval = scenario.peer_period_s or HPA_SYNC_S
        self.target = target
        self.hpa = HorizontalController(
            min_replicas=max(1, scenario.min_replicas),  # minReplicas 0 needs the alpha HPAScaleToZero gate
            max_replicas=scenario.max_replicas,
            target_per_pod=target,
            behavior=behavior,
        )

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return self.hpa.min_replicas

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        # spec and status replicas agree: the simulated executor creates every replica at once
        return self.hpa.reconcile(current, current, obs.get("queue.backlog"), now)


class KEDAController:
    """KEDA with its defaults: a ScaledObject polled every 30 s and the HPA it creates (legacy path).

    KEDA creates its HPA without ``spec.behavior`` unless the user sets one, so the HPA runs
    ``normalizeDesiredReplicas``: at most max(2 x current, 4) per 15 s sync, and the highest
    recommendation of the last 300 s taken before that cap. With ``--min 0`` KEDA activates from
    zero when the lag exceeds ``activationLagThreshold`` (0) and returns to zero ``cooldownPeriod``
    (300 s) after the last active poll; ``initialCooldownPeriod`` is 0.
    """

    warm_up = False  # KEDA polls and its HPA syncs on their periods from the start

    def __init__(self, scenario: Scenario) -> None:
        self.name = "keda"
        # the HPA's sync; KEDA polls on every other one (or, with a common period, on each)
        self.interval = scenario.peer_period_s or HPA_SYNC_S
        self.polling = scenario.peer_period_s or KEDA_POLLING_S
        self.scaled_object = ScaledObject(min_replica_count=scenario.min_replicas)
        self.hpa = HorizontalController(
            min_replicas=self.scaled_object.hpa_min_replicas,
            max_replicas=scenario.max_replicas,
            target_per_pod=KEDA_LAG_THRESHOLD,
            behavior=None,
        )

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return scenario.min_replicas

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        backlog = obs.get("queue.backlog")
        if _on_period(now, self.polling):
            active = backlog is not None and backlog > KEDA_ACTIVATION_LAG_THRESHOLD
            keda = self.scaled_object.request_scale(current, active, now, error=backlog is None)
            if keda is not None and keda != current:
                return keda  # the HPA sees KEDA's change at its next sync
        return self.hpa.reconcile(current, current, backlog, now)


def _on_period(now: float, period: float) -> bool:
    phase = now % period
    return math.isclose(phase, 0.0, abs_tol=1e-9) or math.isclose(phase, period, abs_tol=1e-9)


class ThresholdPercentController:
    """An in-house design: every 5 minutes, +20 % above 1000 queued, -10 % below 100."""

    interval = 300.0
    warm_up = False

    def __init__(self, scenario: Scenario) -> None:
        self.name = "threshold-percent"
        self.min, self.max = scenario.min_replicas, scenario.max_replicas

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return self.min

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        backlog = obs.get("queue.backlog")
        if backlog is None:
            return current
        if backlog > 1000:
            return min(self.max, current + max(1, int(current * 0.2)))
        if backlog < 100:
            return max(self.min, current - max(1, int(current * 0.1)))
        return current


class StaticController:
    """Peak provisioning: enough replicas for the trace's busiest second, from the start."""

    warm_up = False

    def __init__(self, scenario: Scenario) -> None:
        self.name = "static"
        self.interval = scenario.interval_s
        self.count = scenario.min_replicas

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        peak = float(trace.rates.max()) if len(trace.rates) else 0.0
        self.count = max(scenario.min_replicas, min(scenario.max_replicas, math.ceil(peak * scenario.service_s)))
        return self.count

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        return self.count


# ------------------------------------------------------------------ the oracle


def oracle_replica_seconds(trace: Trace, scenario: Scenario, load: Workload, misses: int = 0) -> float:
    """A lower bound on the replica-seconds of any schedule that starts every message within the SLO.

    Every schedule keeps at least ``min`` replicas and must finish message i (work s_i) by
    ``a_i + slo + s_i``. Relax that to fluid work released at the start of its arrival second and
    due by the end of second ``a + 1 + slo + max(s)`` (earlier releases and later deadlines only
    loosen it), let the ``min`` replicas every schedule pays for anyway do as much of it as they
    can, earliest deadline first (optimal for fluid work with release times and deadlines), and
    count whatever they cannot finish in time as extra replica-seconds. Only work due inside the
    trace counts, as the policies' cost is counted over the trace. So the bound is
    ``min * duration + unavoidable extra work``, and no schedule meeting the SLO for every message
    can cost less, whatever it knows.

    With ``misses``, the bound is for schedules that may start up to that many messages late
    (an attainment below 100 %, as ``hpa-tuned`` may have): the bound less the work of the
    ``misses`` longest messages, never below ``min * duration``. Such a schedule meets the SLO
    for the other messages, so it costs at least their bound; and taking work ``w`` out lowers
    the bound by at most ``w``: a fluid schedule that does on time all but ``L`` of the smaller
    load does on time all but ``L + w`` of the whole, and earliest deadline first leaves the
    least undone. That holds here because every arrival second has the same relative deadline
    (``due_after``): deadlines come in release order, so EDF is FIFO and no order does more in time.
    """
    duration = len(trace.rates)
    per_second = [0.0] * duration
    if load.arrivals.size:
        totals = np.bincount(load.arrivals.astype(int), weights=load.service, minlength=duration)
        per_second = totals[:duration].tolist()
    max_s = float(load.service.max()) if load.service.size else 0.0
    due_after = math.ceil(1 + scenario.slo_s + max_s)  # seconds from release to deadline
    base = float(scenario.min_replicas)
    queue: deque[list[float]] = deque()  # [deadline second, remaining work], FIFO == EDF here
    extra = 0.0
    for t in range(duration):
        if per_second[t] > 0:
            queue.append([t + due_after, per_second[t]])
        capacity = base
        while queue and capacity > 0:
            head = queue[0]
            used = min(capacity, head[1])
            head[1] -= used
            capacity -= used
            if head[1] <= 1e-12:
                queue.popleft()
        # work due at the end of this second that the base replicas could not do
        while queue and queue[0][0] <= t + 1:
            extra += queue.popleft()[1]
    late = min(max(misses, 0), load.service.size)
    if late:
        longest = np.partition(load.service, -late)[-late:]
        extra = max(0.0, extra - float(longest.sum()))
    return base * duration + extra


# ------------------------------------------------------------------ hpa-tuned

#: the attainment ``hpa-tuned`` must reach (the issue's bar for every policy)
TUNE_GOAL = 0.995
#: per-replica targets ``hpa-tuned`` chooses from: 1 to 20,000 messages, 25 % apart
TUNE_GRID: tuple[float, ...] = tuple(float(f"{x:.3g}") for x in np.geomspace(1.0, 20_000.0, 45))


@dataclass
class Tuning:
    """What :func:`tune_hpa` chose and everything it simulated to choose it."""

    target: float
    run: Run
    #: target -> (attainment, replica-seconds) of every target simulated to its end; None: a
    #: run stopped early because it could no longer be the choice (over the cost of a better
    #: one, or past the misses the goal allows)
    tried: dict[float, tuple[float, float] | None]


def tune_hpa(trace: Trace, scenario: Scenario, load: Workload, goal: float = TUNE_GOAL) -> Tuning:
    """The HPA's per-replica target an operator tuning in hindsight would pick for this trace.

    Every target on :data:`TUNE_GRID` is considered (a sweep): the cheapest whose run reaches
    ``goal`` wins; if none does, the one with the best attainment, then the cheapest. Cost and
    attainment are not monotone in the target, so nothing is assumed about their shape. To keep
    the sweep fast, runs stop early once they cannot win (:class:`Limits`): a bisection first
    finds feasible targets cheaply, and each later run stops as soon as its replica-seconds pass
    the cheapest feasible run's, or its late messages pass what the goal allows. The result is
    exactly the full sweep's.
    """
    allowed = math.floor((1.0 - goal) * load.arrivals.size + 1e-9)
    floor = remaining_work_floor(trace, scenario, load, allowed)
    runs: dict[int, Run] = {}

    def attempt(i: int, limits: Limits) -> Run:
        ctl = HPAController(scenario, name="hpa-tuned", target=TUNE_GRID[i])
        run = simulate(trace, scenario, ctl, load=load, limits=limits)
        runs[i] = run
        return run

    def feasible(run: Run) -> bool:
        return not run.aborted and _misses(run) <= allowed

    # 1. Bisect for the feasibility boundary (runs past the allowed misses stop early).
    lo, hi = -1, len(TUNE_GRID)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if feasible(attempt(mid, Limits(max_misses=allowed))):
            lo = mid
        else:
            hi = mid
    # 2. Sweep the rest, cheapest-looking (largest targets) first, bounded by the best so far.
    def best_cost() -> float:
        return min((r.replica_seconds for r in runs.values() if feasible(r)), default=math.inf)

    for i in reversed(range(len(TUNE_GRID))):
        if i not in runs:
            attempt(i, Limits(max_cost=best_cost(), max_misses=allowed, cost_floor=floor))
    candidates = [i for i, r in runs.items() if feasible(r)]
    if candidates:
        best = min(candidates, key=lambda i: (runs[i].replica_seconds, -TUNE_GRID[i]))
    else:
        # 3. Nothing reaches the goal: the best attainment, then the cheapest, from full runs.
        for i in reversed(range(len(TUNE_GRID))):
            done = [r for r in runs.values() if not r.aborted]
            fewest = min((_misses(r) for r in done), default=math.inf)
            if runs[i].aborted:
                attempt(i, Limits(max_misses=fewest))
        done_i = [i for i, r in runs.items() if not r.aborted]
        best = min(done_i, key=lambda i: (_misses(runs[i]), runs[i].replica_seconds, -TUNE_GRID[i]))
    run = runs[best]
    run.params["target_per_replica"] = TUNE_GRID[best]
    tried = {TUNE_GRID[i]: None if r.aborted else (_attainment(r), r.replica_seconds) for i, r in sorted(runs.items())}
    return Tuning(TUNE_GRID[best], run, tried)


def _misses(run: Run) -> int:
    return int(np.count_nonzero(run.waits > run.scenario.slo_s))


def _attainment(run: Run) -> float:
    return float(np.mean(run.waits <= run.scenario.slo_s)) if run.messages else 1.0


# ------------------------------------------------------------------ registry



def run_policy(name: str, trace: Trace, scenario: Scenario, load: Workload, advisor: Advisor | None = None) -> Run:
    """One policy on one trace: a controller's run, or for ``hpa-tuned`` the tuned HPA's."""
    if name == "hpa-tuned":
        if advisor is not None:
            raise ValueError("advisors apply to docktor, rules and target, not hpa-tuned")
        return tune_hpa(trace, scenario, load).run
    return simulate(trace, scenario, make_controller(name, scenario, advisor), load=load)  # type: ignore[arg-type]


def make_controller(name: str, scenario: Scenario, advisor: Advisor | None = None) -> object:
    if name in ("docktor", "target"):
        return ProductionController(name, docktor_service(scenario, name), advisor)
    if name == "docktor-open":  # the docktor policy without its closed loop (core/feedback.py)
        return ProductionController(name, docktor_service(scenario).model_copy(update={"closed_loop": False}), advisor)
    if name == "rules":  # the Go Docktor's rules, on its schedule: no warm-up read
        return ProductionController(name, rules_service(scenario), advisor, warm_up=False)
    if advisor is not None:
        raise ValueError(f"advisors apply to docktor, rules and target, not {name}")
    if name == "hpa":
        return HPAController(scenario)
    if name == "keda":
        return KEDAController(scenario)
    if name == "threshold-percent":
        return ThresholdPercentController(scenario)
    if name == "static":
        return StaticController(scenario)
    raise KeyError(name)
