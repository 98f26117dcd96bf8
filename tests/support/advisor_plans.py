"""Shared pieces for the advisor tests: a service, plans built by the real decide.plan, tool data, and
the hypothesis strategies of the envelope's properties (scenarios, allowances)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from docktor.agent.config.model import POLICY_DEFAULTS, LLMConfig, Rule, Rules, ServiceConfig
from docktor.agent.core.decide import Allowance, Plan, plan
from docktor.agent.core.state import ServiceState


def service(**overrides: Any) -> ServiceConfig:
    base: dict[str, Any] = dict(
        name="worker",
        policy="rules",  # these tests are about the rules' direction gate, whatever the default policy
        min_replicas=1,
        max_replicas=10,
        scale_up_by=2,
        scale_down_by=1,
        cooldown_up=0,
        cooldown_down=0,
        scale_down_stabilization=0,
        rules=Rules(
            scale_up_when=[Rule(metric="queue.backlog", op=">", value=100)],
            scale_down_when=[Rule(metric="queue.backlog", op="<", value=10)],
        ),
    )
    base.update(overrides)
    if base["policy"] != "rules":
        # scale_up_by / scale_down_by above are set as a user sets them, so (like HPA's policies)
        # they replace the sizing policy's step defaults for their direction: the percent steps
        # these plans were written with (the policy's) are set beside them explicitly
        for key in ("scale_up_percent", "scale_down_percent"):
            base.setdefault(key, POLICY_DEFAULTS[base["policy"]].get(key))
    return ServiceConfig(**base)


def make_plan(
    svc: ServiceConfig, backlog: float, current: int, state: ServiceState | None = None, now: float = 1000.0, rate_in: float = 20.0
) -> Plan:
    return plan(svc, {"queue.backlog": backlog, "queue.rate_in": rate_in}, current, state or ServiceState(), now)


def llm_config(base_url: str, **overrides: Any) -> LLMConfig:
    values: dict[str, Any] = dict(provider="openai-compatible", base_url=base_url, model="scripted-model", timeout=3.0, max_tool_rounds=0)
    values.update(overrides)
    return LLMConfig(**values)


@dataclass
class StaticTools:
    """A ToolContext over fixed data (the daemon's real one reads its runners)."""

    metrics: dict[str, float] = field(default_factory=lambda: {"queue.backlog": 500.0, "queue.rate_in": 20.0})
    decisions: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def queue_metrics(self, service: str) -> dict[str, float]:
        self.calls.append(("queue_metrics", (service,)))
        return dict(self.metrics)

    def service_status(self, service: str) -> dict[str, Any]:
        self.calls.append(("service_status", (service,)))
        return {"desired": 2, "running": 2, "failed": 0, "healthy": True}

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        self.calls.append(("recent_decisions", (service, n)))
        return self.decisions[-n:]

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        self.calls.append(("metric_history", (service, metric, minutes)))
        return [(900.0 + i, float(i)) for i in range(100)]


#: the service most envelope tests decide for
SVC = service()


@st.composite
def scenarios(draw):
    lo = draw(st.integers(0, 5))
    hi = draw(st.integers(max(lo, 1), 30))
    svc = service(
        min_replicas=lo,
        max_replicas=hi,
        scale_up_by=draw(st.integers(1, 5)),
        scale_up_percent=draw(st.sampled_from([None, 100, 900])),  # docktor's own default is x10
        scale_down_by=draw(st.integers(1, 5)),
        cooldown_up=draw(st.sampled_from([0, 30])),
        cooldown_down=draw(st.sampled_from([0, 60])),
        scale_down_stabilization=draw(st.sampled_from([0, 60])),
        policy=draw(st.sampled_from(["rules", "target", "docktor"])),
        processing_time=0.5,
        target_per_replica=50,
        rules=Rules(
            scale_up_when=[Rule(metric="queue.backlog", op=">", value=draw(st.sampled_from([100, 300])))],
            scale_down_when=draw(st.sampled_from([[], [Rule(metric="queue.backlog", op="<", value=20)]])),
        ),
    )
    now = 1000.0
    state = ServiceState(
        last_up_at=draw(st.sampled_from([None, 990.0, 900.0])),
        last_down_at=draw(st.sampled_from([None, 980.0, 800.0])),
        backoff_until=draw(st.sampled_from([None, 1010.0])),
    )
    for t, n in draw(st.lists(st.tuples(st.floats(900, 999), st.integers(0, 40)), max_size=4)):
        state.recommendations.append((t, n))
    observations = {"queue.rate_in": 10.0}
    backlog = draw(st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)))  # None: missing
    if backlog is not None:
        observations["queue.backlog"] = backlog
    current = draw(st.integers(0, 40))
    return svc, state, now, observations, current


ALLOWANCES = st.builds(Allowance, st.integers(0, 5), st.sampled_from([0.0, 10.0, 50.0, 100.0, 1000.0]))
