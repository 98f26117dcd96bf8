"""The policies a service may choose with ``policy:``, and what each needs to decide.

The ``docktor`` policy's module (numpy) is imported on its first decision, not here: the config
loader reads what each policy needs, and ``docktor validate`` should not pay for numpy.
"""

from __future__ import annotations

from collections.abc import Mapping

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.policy import PolicySpec, Proposal, rules_policy, target_policy
from docktor.agent.core.rules import Evaluation
from docktor.agent.core.state import ServiceState

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
