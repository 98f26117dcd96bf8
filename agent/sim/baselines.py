"""Controllers the simulator can drive: Docktor's own policies and faithful baselines, plus the oracle.

``docktor``, ``rules`` and ``target`` run the production code: :func:`docktor.agent.core.decide.step`
and :func:`docktor.agent.core.decide.remember`, the decision the daemon makes. The others re-implement other autoscalers' documented math (docs/policy.md lists it):

- ``hpa``: Kubernetes HPA on an external AverageValue metric (queue backlog per replica, target
  ``HPA_TARGET``), 15 s sync, tolerance 0.1, default behavior: scale-up limited per 15 s to the
  larger of +100 % and +4 pods, no scale-up stabilization; scale-down stabilization 300 s.
- ``keda``: the HPA above as KEDA builds it, plus activation (``activationLagThreshold`` 0 polled
  every 30 s) and ``cooldownPeriod`` 300 s back to zero when ``--min`` is 0.
- ``threshold-percent``: every 5 min, backlog > 1000 adds max(1, 20 %), backlog < 100 removes
  max(1, 10 %).
- ``static``: peak provisioning, ``ceil(peak rate * mean service time)`` replicas all along.
- ``oracle``: not a controller but a lower bound on replica-seconds (:func:`oracle_replica_seconds`).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from docktor.agent.config.model import Rule, Rules, ServiceConfig
from docktor.agent.core.decide import remember, step
from docktor.agent.core.state import ServiceState
from docktor.agent.sim.advisors import Advisor
from docktor.agent.sim.simulator import Scenario, Trace, Workload

#: AverageValue target (backlog per replica) of the hpa, keda and target policies: the value of
#: KEDA's nats-jetstream documentation example (lagThreshold: "10")
HPA_TARGET = 10.0
HPA_SYNC_S = 15.0
HPA_TOLERANCE = 0.1
HPA_UP_PERCENT = 100.0
HPA_UP_PODS = 4
HPA_DOWN_STABILIZATION_S = 300.0
KEDA_POLLING_S = 30.0
KEDA_COOLDOWN_S = 300.0
KEDA_ACTIVATION = 0.0

# ------------------------------------------------------------------ service configs per policy


def docktor_service(scenario: Scenario, policy: str = "docktor") -> ServiceConfig:
    """The recommended guardrails for the sizing policies (examples/ and docs/policy.md show them).

    Scale-up may double per tick (or add 4), like HPA's default behavior; scale-in is limited
    by a 60 s stabilization window and a 30 s cooldown, at most half the replicas per step.
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
        scale_up_by=4,
        scale_up_percent=100,
        scale_down_by=1,
        scale_down_percent=50,
        cooldown_up=0,
        cooldown_down=30,
        scale_down_stabilization=60,
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

    def __init__(self, name: str, svc: ServiceConfig, advisor: Advisor | None = None) -> None:
        self.name = name
        self.svc = svc
        self.interval = svc.check_interval
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
    """Kubernetes HPA with an AverageValue external metric and the default behavior."""

    def __init__(self, scenario: Scenario, name: str = "hpa", min_replicas: int | None = None) -> None:
        self.name = name
        self.interval = HPA_SYNC_S
        self.min = scenario.min_replicas if min_replicas is None else min_replicas
        self.max = scenario.max_replicas
        self.rec: deque[tuple[float, int]] = deque()

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return max(1, self.min)

    def desired(self, backlog: float, current: int) -> int:
        if current == 0:
            return 0  # the HPA never scales from zero; KEDA's activation does
        ratio = (backlog / current) / HPA_TARGET
        if abs(ratio - 1) <= HPA_TOLERANCE:
            return current
        return math.ceil(backlog / HPA_TARGET)

    def hpa_step(self, obs: dict[str, float], current: int, now: float, floor: int) -> int:
        if "queue.backlog" not in obs:
            return current
        want = self.desired(obs["queue.backlog"], current)
        # scale-down stabilization: the highest recommendation of the last 300 s
        self.rec.append((now, want))
        while self.rec and self.rec[0][0] <= now - HPA_DOWN_STABILIZATION_S:
            self.rec.popleft()
        if want < current:
            want = min(current, max(r for _, r in self.rec))
        # scale-up policies, selectPolicy Max, one sync period each
        limit = max(current + math.ceil(current * HPA_UP_PERCENT / 100), current + HPA_UP_PODS)
        want = min(want, limit)
        return max(floor, min(self.max, want))

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        return self.hpa_step(obs, current, now, max(1, self.min))


class KEDAController(HPAController):
    """KEDA: the HPA for 1..N, plus activation to and from zero when the minimum is 0."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario, name="keda")
        self.last_active = 0.0

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return self.min if self.min > 0 else 0

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        if self.min > 0:
            return self.hpa_step(obs, current, now, self.min)
        if "queue.backlog" not in obs:
            return current
        polled = math.isclose(now % KEDA_POLLING_S, 0.0, abs_tol=1e-9) or math.isclose(
            now % KEDA_POLLING_S, KEDA_POLLING_S, abs_tol=1e-9
        )
        active = obs["queue.backlog"] > KEDA_ACTIVATION
        if polled and active:
            self.last_active = now
        if current == 0:
            return 1 if polled and active else 0
        if polled and not active and now - self.last_active >= KEDA_COOLDOWN_S:
            self.rec.clear()
            return 0
        return self.hpa_step(obs, current, now, 1)


class ThresholdPercentController:
    """An in-house design: every 5 minutes, +20 % above 1000 queued, -10 % below 100."""

    interval = 300.0

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


def oracle_replica_seconds(trace: Trace, scenario: Scenario, load: Workload) -> float:
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
    return base * duration + extra


# ------------------------------------------------------------------ registry



def make_controller(name: str, scenario: Scenario, advisor: Advisor | None = None) -> object:
    if name in ("docktor", "target"):
        return ProductionController(name, docktor_service(scenario, name), advisor)
    if name == "docktor-forecast":  # the docktor policy with `prediction: forecast`
        svc = docktor_service(scenario).model_copy(update={"prediction": "forecast"})
        return ProductionController(name, svc, advisor)
    if name == "rules":
        return ProductionController(name, rules_service(scenario), advisor)
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
