"""Guardrails: the envelope of replica counts a decision may land in, and the clamp into it.

Whatever proposes a target (the rules, a sizing policy, an LLM), the executed target is
``clamp(proposal, envelope)``. The envelope is built from the bounds, the direction the rules
allow, step limits, per-direction cooldowns, scale-down stabilization, executor back-off and
missing data. Each side of the envelope remembers which guardrail set it, so a clamp can say why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.state import ServiceState


@dataclass(frozen=True)
class Gate:
    """Which directions the rules (or missing data) allow, and why not."""

    up: bool
    down: bool
    up_reason: str = "direction"  # guardrail name recorded when up is refused
    down_reason: str = "direction"


@dataclass(frozen=True)
class Envelope:
    lo: int
    hi: int
    lo_by: str  # guardrail that set the lower side, e.g. "min_replicas", "cooldown_down"
    hi_by: str

    def contains(self, n: int) -> bool:
        return self.lo <= n <= self.hi


@dataclass(frozen=True)
class GuardrailNote:
    """One guardrail that changed a proposal."""

    name: str
    before: int
    after: int

    def text(self) -> str:
        return f"{self.name}: {self.before} -> {self.after}"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "from": self.before, "to": self.after}


def step_up(svc: ServiceConfig, current: int) -> int:
    step = svc.scale_up_by
    if svc.scale_up_percent:
        step = max(step, math.ceil(current * svc.scale_up_percent / 100))
    return step


def step_down(svc: ServiceConfig, current: int) -> int:
    step = svc.scale_down_by
    if svc.scale_down_percent:
        step = max(step, math.floor(current * svc.scale_down_percent / 100))
    return step


def stabilized_floor(svc: ServiceConfig, state: ServiceState, now: float, proposal: int) -> int:
    """HPA's scale-down stabilization: never below the highest recommendation in the window."""
    since = now - svc.scale_down_stabilization
    floor = proposal
    for t, n in reversed(state.recommendations):  # newest first: stop at the window's edge
        if t <= since:
            break
        floor = max(floor, n)
    return floor


def envelope(
    svc: ServiceConfig, state: ServiceState, current: int, gate: Gate, now: float, proposal: int | None = None
) -> Envelope:
    hi_side: list[tuple[int, str]] = [(svc.max_replicas, "max_replicas")]
    if not gate.up:
        hi_side.append((current, gate.up_reason))
    elif state.backoff_until is not None and now < state.backoff_until:
        hi_side.append((current, "backoff"))
    elif state.last_up_at is not None and now - state.last_up_at < svc.cooldown_up:
        hi_side.append((current, "cooldown_up"))
    else:
        hi_side.append((current + step_up(svc, current), "step_limit"))

    lo_side: list[tuple[int, str]] = [(svc.min_replicas, "min_replicas")]
    last_action = state.last_action_at()
    if not gate.down:
        lo_side.append((current, gate.down_reason))
    elif last_action is not None and now - last_action < svc.cooldown_down:
        lo_side.append((current, "cooldown_down"))
    else:
        lo_side.append((current - step_down(svc, current), "step_limit"))
        floor = stabilized_floor(svc, state, now, proposal if proposal is not None else current)
        lo_side.append((min(floor, current), "stabilization"))

    # min() / max() keep the first of equal values, so list order breaks ties toward the bounds.
    hi, hi_by = min(hi_side, key=lambda c: c[0])
    lo, lo_by = max(lo_side, key=lambda c: c[0])
    # A count outside [min, max] is corrected whatever the other guardrails say.
    if hi < svc.min_replicas:
        hi, hi_by = svc.min_replicas, "min_replicas"
    if lo > svc.max_replicas:
        lo, lo_by = svc.max_replicas, "max_replicas"
    return Envelope(lo=lo, hi=hi, lo_by=lo_by, hi_by=hi_by)


def clamp(proposal: int, env: Envelope) -> tuple[int, list[GuardrailNote]]:
    if proposal > env.hi:
        return env.hi, [GuardrailNote(env.hi_by, proposal, env.hi)]
    if proposal < env.lo:
        return env.lo, [GuardrailNote(env.lo_by, proposal, env.lo)]
    return proposal, []
