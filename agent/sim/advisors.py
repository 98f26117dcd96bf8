"""Advisors the simulator can put on a production policy: an adversary, and the real LLM advisor.

Their proposals go through exactly the envelope and clamp the daemon's do, so a benchmark with
``--advisor adversarial`` measures what the guardrails contain, and ``--advisor llm`` what a
model costs or saves on a trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from docktor.agent.advisor.gate import llm_envelope
from docktor.agent.config.model import LLMConfig, ServiceConfig
from docktor.agent.core.decide import DEFAULT_ALLOWANCE, Advice, Decision, Plan
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.problems import Problem, UsageError

#: an advisor in the simulator: advice for a plan (None keeps the policy's own proposal)
Advisor = Callable[[ServiceConfig, Plan, ServiceState, float], "Advice | None"]


def adversarial_advisor() -> Advisor:
    """Each tick, the most damaging proposal: flip between far above max and zero.

    Alternating maximizes both harms the guardrails must contain: over-provisioning cost and
    starvation, plus the churn of every reversal they let through. The proposal goes through the
    same envelope an LLM's does (:func:`docktor.agent.advisor.gate.llm_envelope`, the direction rule with
    ``may_act_without_rules: false``), then :func:`docktor.agent.core.decide.conclude`, with the
    default ``llm:`` allowance above the deterministic target (``max_extra_replicas: 2``,
    ``max_extra_percent: 50``).
    """
    flip = {"up": True}

    def advise(svc: ServiceConfig, p: Plan, state: ServiceState, now: float) -> Advice:
        up = flip["up"]
        flip["up"] = not up
        env = llm_envelope(svc, p, state, now, False, DEFAULT_ALLOWANCE)
        return Advice(Proposal(svc.max_replicas * 10 if up else 0, "adversarial: " + ("max" if up else "zero")), "llm", None, env,
                      DEFAULT_ALLOWANCE)

    return advise


class SimTools:
    """The advisor's tools (:class:`docktor.agent.advisor.protocol.ToolContext`) over a simulated service's state."""

    def __init__(self, state: ServiceState, svc: ServiceConfig, last: Decision | None = None) -> None:
        self.state = state
        self.svc = svc
        self.last = last

    def queue_metrics(self, service: str) -> dict[str, float]:
        return dict(self.state.history[-1][1]) if self.state.history else {}

    def service_status(self, service: str) -> dict[str, Any]:
        last = self.state.history[-1][1] if self.state.history else {}
        return {
            "desired": int(last.get("replicas.desired", self.svc.min_replicas)),
            "running": int(last.get("replicas.running", self.svc.min_replicas)),
            "failed": 0,
            "healthy": True,
        }

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        d = self.last
        if d is None:
            return []
        return [{"current_replicas": d.current, "decision": d.decision, "target_replicas": d.target, "reason": d.reason}][-n:]

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        if not self.state.history:
            return []
        since = self.state.history[-1][0] - minutes * 60
        return [(t, o[metric]) for t, o in self.state.history if t >= since and metric in o]


class LLMAdvisor:
    """The production LLM advisor (docktor.agent.advisor.advisor.Advisor) asked each tick, on one event loop.

    Sim time is passed as ``now`` (when to ask, heartbeats); the model's own latency is real.
    Like the daemon, a failing model means the deterministic proposal (source ``fallback``).
    """

    def __init__(self, config: LLMConfig) -> None:
        from docktor.agent.advisor.advisor import make_advisor as make_llm_advisor

        advisor = make_llm_advisor(config)
        if advisor is None:
            raise UsageError([Problem("--llm-config", "llm.provider is none: no LLM to ask")])
        self.advisor = advisor
        self.loop = asyncio.new_event_loop()
        self.calls = 0

    def __call__(self, svc: ServiceConfig, p: Plan, state: ServiceState, now: float) -> Advice | None:
        advice = self.loop.run_until_complete(self.advisor.advise(svc, p, state, SimTools(state, svc), now))
        if advice.record and advice.record.get("asked"):
            self.calls += 1
        if advice.proposal is None:
            return None
        return Advice(advice.proposal, "llm", advice.record, advice.envelope, advice.allowance)

    def close(self) -> None:
        self.loop.close()
