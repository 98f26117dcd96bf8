"""One decision for one service: rules -> policy proposal -> guardrails -> target.

``plan`` does everything that does not depend on who proposes (rules, gate, envelope); ``finish``
clamps a proposal from any source into the envelope. ``decide`` is both, for the policy's own
proposal. All three are pure: the caller advances state with :func:`agent.state.remember`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agent.config import ServiceConfig
from agent.guardrails import Envelope, Gate, GuardrailNote, clamp, envelope
from agent.metrics import derive
from agent.policy import POLICIES, Proposal
from agent.rules import Evaluation, evaluate
from agent.state import ServiceState

Action = Literal["scale_up", "scale_down", "hold"]
Source = Literal["rules", "policy", "llm", "fallback"]


@dataclass(frozen=True)
class Plan:
    service: str
    current: int
    observations: dict[str, float]
    evaluation: Evaluation
    missing: list[str]
    gate: Gate
    envelope: Envelope
    proposal: Proposal  # the deterministic policy's own proposal


@dataclass(frozen=True)
class Decision:
    service: str
    current: int
    decision: Action
    target: int
    reason: str
    proposal: int  # what the policy (or LLM) asked for, before guardrails
    matched_rules: list[str]
    guardrails: list[GuardrailNote]
    envelope: Envelope
    source: Source
    policy: str
    observations: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    #: the deterministic policy's count, within [min, max]: what scale-down stabilization
    #: remembers, so an advisor's wild proposal can never hold replicas up for a whole window
    recommendation: int = 0

    @property
    def changes(self) -> bool:
        return self.target != self.current


def gate_for(svc: ServiceConfig, ev: Evaluation, missing: list[str]) -> Gate:
    if missing:
        # never scale blind: a rule or the policy lacks data, so only bounds corrections happen
        return Gate(up=False, down=False, up_reason="missing_metrics", down_reason="missing_metrics")
    if POLICIES[svc.policy].rules_drive:
        return Gate(up=ev.up_fired, down=ev.down_fired)
    down_ok = (not svc.rules.scale_down_when or ev.down_fired) and not ev.up_fired
    return Gate(up=True, down=down_ok, down_reason="rules")


def plan(
    svc: ServiceConfig, observations: Mapping[str, float], current: int, state: ServiceState, now: float
) -> Plan:
    # Per-replica figures need a replica count; callers without an executor reading use current.
    obs = derive({"replicas.running": float(current), **observations})
    ev = evaluate(svc.rules, obs)
    spec = POLICIES[svc.policy]
    missing = sorted((svc.rule_metrics() | spec.required(svc)) - obs.keys())
    if missing:
        proposal = Proposal(current, f"missing {', '.join(missing)}: holding")
    else:
        proposal = spec.propose(svc, obs, current, state, ev, now)
    gate = gate_for(svc, ev, missing)
    env = envelope(svc, state, current, gate, now, proposal.target)
    return Plan(svc.name, current, obs, ev, missing, gate, env, proposal)


def finish(
    svc: ServiceConfig, p: Plan, proposal: Proposal, source: Source, *, envelope: Envelope | None = None
) -> Decision:
    """Clamp ``proposal`` into the plan's envelope (or a narrower one, e.g. the LLM's)."""
    env = envelope or p.envelope
    target, notes = clamp(proposal.target, env)
    action: Action = "scale_up" if target > p.current else "scale_down" if target < p.current else "hold"
    reason = proposal.reason
    if notes:
        reason += "; " + ", ".join(f"{n.name} {n.before} -> {n.after}" for n in notes)
    return Decision(
        service=p.service,
        current=p.current,
        decision=action,
        target=target,
        reason=reason,
        proposal=proposal.target,
        matched_rules=p.evaluation.matched_rules,
        guardrails=notes,
        envelope=env,
        source=source,
        policy=svc.policy,
        observations=p.observations,
        missing=p.missing,
        recommendation=min(max(p.proposal.target, svc.min_replicas), svc.max_replicas),
    )


def decide(
    svc: ServiceConfig, observations: Mapping[str, float], current: int, state: ServiceState, now: float
) -> Decision:
    p = plan(svc, observations, current, state, now)
    return finish(svc, p, p.proposal, "rules" if svc.policy == "rules" else "policy")
