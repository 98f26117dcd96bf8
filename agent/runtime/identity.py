"""What gives a service's saved state its meaning (:class:`Identity`).

Each piece of a state file is kept only while what it was saved for is unchanged: the cooldown
clocks belong to the executor's target (another deployment has its own), the stabilization
window to the bounds and the policy too, a rate baseline to its source's settings, the LLM
circuit breaker to the endpoint and model. Settings are compared by digest, so the state file
holds no setting's value.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from docktor.agent.config.model import LLMConfig, ServiceConfig, SourceSpec
from docktor.agent.problems import UsageError


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def source_identity(spec: SourceSpec) -> str:
    """A source is the same source while its kind and settings are (its name keys it)."""
    return f"{spec.kind}:{_digest(spec.kind, spec.settings.model_dump_json())}"


def executor_identity(svc: ServiceConfig, target: str | None) -> str:
    """What the service's replicas are: the executor's own name for its target when it has one
    (``compose:<engine>/<project>/<service>``), else its kind and settings."""
    if svc.executor is None:
        return "none"
    if target is not None:  # the service loop's target, which names the kind already
        return target
    return f"{svc.executor.kind}:{_digest(svc.executor.kind, svc.executor.settings.model_dump_json())}"


def llm_identity(llm: LLMConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The breaker belongs to an endpoint and model, as they resolve (``from: compose`` reads them
    from the variables Compose injects, so the text of ``llm:`` alone does not say which); None
    without an LLM. A digest: the endpoint may carry credentials, and the state file holds none."""
    if llm.provider == "none":
        return None
    # imported here: the advisor's client loads the openai SDK (a quarter second and tens of MiB),
    # which a daemon without an LLM never needs
    from docktor.agent.advisor.client import resolve_endpoint

    try:
        found = resolve_endpoint(llm, os.environ if env is None else env)
        endpoint = (found.provider, found.base_url, found.model)
    except UsageError:  # not resolvable yet (a variable unset): the advisor says so; name what is written
        endpoint = (llm.provider, llm.base_url or "", llm.model or "")
    return f"{llm.provider}:{_digest(*endpoint)}"


@dataclass(frozen=True)
class Identity:
    """What gives each saved piece its meaning."""

    executor: str
    min_replicas: int
    max_replicas: int
    policy: str
    sources: dict[str, str]
    llm: str | None

    @classmethod
    def of(cls, svc: ServiceConfig, target: str | None, llm: LLMConfig) -> Identity:
        return cls(
            executor=executor_identity(svc, target), min_replicas=svc.min_replicas, max_replicas=svc.max_replicas,
            policy=svc.policy, sources={s.name: source_identity(s) for s in svc.sources}, llm=llm_identity(llm),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"executor": self.executor, "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "policy": self.policy, "sources": dict(self.sources), "llm": self.llm}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Identity:
        return cls(executor=str(d["executor"]), min_replicas=int(d["min_replicas"]), max_replicas=int(d["max_replicas"]),
                   policy=str(d["policy"]), sources={str(k): str(v) for k, v in dict(d["sources"]).items()},
                   llm=None if d.get("llm") is None else str(d["llm"]))

    def executor_changed(self, new: Identity) -> str | None:
        return "the executor changed (another deployment)" if self.executor != new.executor else None

    def window_changed(self, new: Identity) -> str | None:
        """Why the stabilization recommendations no longer mean anything, or None."""
        why = []
        if self.executor != new.executor:
            why.append("the executor changed")
        if self.min_replicas != new.min_replicas:
            why.append(f"min_replicas changed ({self.min_replicas} -> {new.min_replicas})")
        if self.max_replicas != new.max_replicas:
            why.append(f"max_replicas changed ({self.max_replicas} -> {new.max_replicas})")
        if self.policy != new.policy:
            why.append(f"policy changed ({self.policy} -> {new.policy})")
        return ", ".join(why) or None

    def source_changed(self, name: str, new: Identity) -> str | None:
        if name not in new.sources:
            return f"source {name} is no longer configured"
        if self.sources.get(name) != new.sources[name]:
            return f"source {name} changed"
        return None
