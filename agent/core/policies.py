"""The policies a service may choose with ``policy:``, and what each needs to decide."""

from __future__ import annotations

from docktor.agent.core.policy import PolicySpec, rules_policy, target_policy
from docktor.agent.core.sizing import docktor_policy, required_metrics

POLICIES: dict[str, PolicySpec] = {
    "rules": PolicySpec(rules_policy, lambda svc: set(), rules_drive=True),
    "target": PolicySpec(target_policy, lambda svc: {"queue.backlog"}, rules_drive=False),
    "docktor": PolicySpec(docktor_policy, required_metrics, rules_drive=False),
}
