"""Threshold and target policies, and what every policy returns: observations -> a proposed count.

Every policy is a pure function of (service config, observations, current replicas, state,
rules evaluation, time). The daemon and the simulator call the same functions. Selected per
service with ``policy:``; the rules still gate directions and the guardrails still clamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.guardrails import step_down, step_up
from docktor.agent.core.rules import Evaluation
from docktor.agent.core.state import ServiceState


@dataclass(frozen=True)
class Proposal:
    target: int
    reason: str


ProposeFn = Callable[[ServiceConfig, Mapping[str, float], int, ServiceState, Evaluation, float], Proposal]


@dataclass(frozen=True)
class PolicySpec:
    propose: ProposeFn
    #: metrics the policy cannot decide without, beyond those the rules name
    required: Callable[[ServiceConfig], set[str]]
    #: True: the rules alone choose the direction (threshold autoscaler). False: the policy sizes,
    #: and the rules act as vetoes (no scale-in unless scale_down_when holds, none while an up rule fires).
    rules_drive: bool


def rules_policy(
    svc: ServiceConfig, obs: Mapping[str, float], current: int, state: ServiceState, ev: Evaluation, now: float
) -> Proposal:
    """The threshold autoscaler: up by a step when any up rule matches, down when all down rules do."""
    if ev.up_fired:
        return Proposal(current + step_up(svc, current), " or ".join(r.text() for r in ev.up if r.matched))
    if ev.down_fired:
        return Proposal(max(0, current - step_down(svc, current)), " and ".join(r.text() for r in ev.down))
    return Proposal(current, "no rule matched")


#: HPA's default tolerance: no change while the ratio is within 10 % of 1
HPA_TOLERANCE = 0.1


def target_policy(
    svc: ServiceConfig, obs: Mapping[str, float], current: int, state: ServiceState, ev: Evaluation, now: float
) -> Proposal:
    """HPA/KEDA AverageValue: ``ceil(backlog / target_per_replica)``, with HPA's 10 % tolerance."""
    assert svc.target_per_replica is not None  # the config loader enforces it for this policy
    backlog = obs["queue.backlog"]
    desired = math.ceil(backlog / svc.target_per_replica)
    if backlog <= 0:
        return Proposal(0, "queue empty: needs 0 replicas")
    if current > 0 and abs(backlog / (current * svc.target_per_replica) - 1) <= HPA_TOLERANCE:
        return Proposal(current, f"queue.backlog {backlog:g} within 10% of {svc.target_per_replica:g}/replica")
    return Proposal(desired, f"queue.backlog {backlog:g} / {svc.target_per_replica:g} per replica = {desired}")
