"""The policies a service may choose with ``policy:``: observations -> a proposed replica count.

Every policy is a pure function of (service config, observations, current replicas, state,
rules evaluation, time). The daemon and the simulator call the same functions. Selected per
service with ``policy:``; the rules still gate directions and the guardrails still clamp.

``rules`` and ``target`` are here; the ``docktor`` policy's module (numpy, :mod:`.sizing`) is
imported on its first decision, not here: the config loader reads what each policy needs, and
``docktor validate`` should not pay for numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.guardrails import step_down, step_up
from docktor.agent.core.proposal import PolicySpec, Proposal
from docktor.agent.core.rules import Evaluation
from docktor.agent.core.state import ServiceState


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
        return Proposal(current, f"queue.backlog {backlog:g} within 10% of {svc.target_per_replica:g}/replica", keeps=True)
    return Proposal(desired, f"queue.backlog {backlog:g} / {svc.target_per_replica:g} per replica = {desired}")

#: what the docktor policy cannot size without (rate_out and ack_pending sharpen its estimates)
DOCKTOR_REQUIRED = frozenset({"queue.backlog", "queue.rate_in"})

#: The least a missing metric can be. Work waiting and work arriving are never negative, and the
#: sizing policies need more replicas for more of either, so sizing with a missing one counted as
#: this yields a lower bound of what the full data would ask for: safe to scale *up* to, never to
#: scale in on. A required metric without an entry here makes the policy hold when it is missing.
LOWER_BOUNDS: dict[str, float] = {"queue.backlog": 0.0, "queue.rate_in": 0.0}


def _docktor(
    svc: ServiceConfig, obs: Mapping[str, float], current: int, state: ServiceState, ev: Evaluation, now: float
) -> Proposal:
    from docktor.agent.core.sizing import docktor_policy

    return docktor_policy(svc, obs, current, state, ev, now)


POLICIES: dict[str, PolicySpec] = {
    "rules": PolicySpec(rules_policy, lambda svc: set(), rules_drive=True),
    "target": PolicySpec(target_policy, lambda svc: {"queue.backlog"}, rules_drive=False),
    "docktor": PolicySpec(_docktor, lambda svc: set(DOCKTOR_REQUIRED), rules_drive=False),
}
