"""Guardrails: the envelope of replica counts a decision may land in, and the clamp into it.

Whatever proposes a target (the rules, a sizing policy, an LLM), the executed target is
``clamp(proposal, envelope)``. The envelope is built from the bounds, the direction the rules
allow, step limits, per-direction cooldowns, scale-down stabilization, executor back-off and
missing data. Each side of the envelope remembers which guardrail set it, so a clamp can say why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    #: seconds until a clock guardrail (a cooldown, back-off, stabilization) that set a side lets go
    lo_left: float | None = None
    hi_left: float | None = None

    def contains(self, n: int) -> bool:
        return self.lo <= n <= self.hi


#: what each guardrail is, in a sentence's words
_GUARDRAIL_WORDS: dict[str, str] = {
    "max_replicas": "max_replicas",
    "min_replicas": "min_replicas",
    "step_limit": "the step limit",
    "cooldown_up": "cooldown_up",
    "cooldown_down": "cooldown_down",
    "backoff": "the back-off after a failed scale",
    "stabilization": "scale-down stabilization",
    "missing_metrics": "missing metrics",
    "rules": "the scale_down_when rules",
    "direction": "the rules (no scale rule fired that way)",
    "llm_direction": "the direction the rules allow",
    "deterministic_scale_up": "the deterministic scale-up",
    "deterministic_scale_down": "the deterministic scale-down",
    "llm_extra": "the LLM's allowance above the deterministic count",
}


def guardrail_words(name: str) -> str:
    """What a guardrail is, in a sentence's words (``step_limit``: ``the step limit``)."""
    return _GUARDRAIL_WORDS.get(name, name)


@dataclass(frozen=True)
class GuardrailNote:
    """One guardrail that changed a proposal."""

    name: str
    before: int
    after: int
    #: seconds until the guardrail lets go, for the clock ones
    left: float | None = None

    def text(self, current: int | None = None) -> str:
        """``held at 8 by cooldown_down (21 s left; asked 7)``, ``capped at 10 by max_replicas (asked 14)``."""
        who = guardrail_words(self.name)
        if current is not None and self.after == current:
            verb = "held at"
        elif self.after < self.before:
            verb = "capped at" if self.name == "max_replicas" else "limited to"
        else:
            verb = "raised to" if self.name == "min_replicas" else "kept at"
        left = f"{self.left:.0f} s left; " if self.left is not None else ""
        return f"{verb} {self.after} by {who} ({left}asked {self.before})"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "from": self.before, "to": self.after}
        if self.left is not None:
            out["left_s"] = round(self.left, 1)
        return out


def step_up(svc: ServiceConfig, current: int) -> int:
    """The most one decision may add: the larger of the limits the service has (HPA selectPolicy: Max)."""
    return _step(svc.scale_up_by, svc.scale_up_percent, current, math.ceil)


def step_down(svc: ServiceConfig, current: int) -> int:
    """The most one decision may remove, like :func:`step_up`."""
    return _step(svc.scale_down_by, svc.scale_down_percent, current, math.floor)


def _step(by: int | None, percent: float | None, current: int, rounding: Callable[[float], int]) -> int:
    # A limit the user did not set is None (STEP_LIMITS in the config model): only the set ones
    # count. At least one replica a step, so a percent limit alone can still leave or reach zero.
    steps = [by] if by is not None else []
    if percent is not None:
        steps.append(rounding(current * percent / 100))
    return max(1, *steps)


def stabilized_floor(svc: ServiceConfig, state: ServiceState, now: float, proposal: int) -> int:
    """HPA's scale-down stabilization: never below the highest recommendation in the window."""
    since = now - svc.scale_down_stabilization
    floor = proposal
    for t, n in reversed(state.recommendations):  # newest first: stop at the window's edge
        if t <= since:
            break
        floor = max(floor, n)
    return floor


def stabilization_left(svc: ServiceConfig, state: ServiceState, now: float, proposal: int) -> float | None:
    """Seconds until every recommendation above ``proposal`` has left the window (if none come)."""
    since = now - svc.scale_down_stabilization
    above = [t for t, n in state.recommendations if t > since and n > proposal]
    return max(above) + svc.scale_down_stabilization - now if above else None


def envelope(
    svc: ServiceConfig, state: ServiceState, current: int, gate: Gate, now: float, proposal: int | None = None
) -> Envelope:
    # Each side: (count, guardrail, seconds until it lets go when it is a clock).
    hi_side: list[tuple[int, str, float | None]] = [(svc.max_replicas, "max_replicas", None)]
    if not gate.up:
        hi_side.append((current, gate.up_reason, None))
    elif state.backoff_until is not None and now < state.backoff_until:
        hi_side.append((current, "backoff", state.backoff_until - now))
    elif state.last_up_at is not None and now - state.last_up_at < svc.cooldown_up:
        hi_side.append((current, "cooldown_up", svc.cooldown_up - (now - state.last_up_at)))
    else:
        hi_side.append((current + step_up(svc, current), "step_limit", None))

    lo_side: list[tuple[int, str, float | None]] = [(svc.min_replicas, "min_replicas", None)]
    last_action = state.last_action_at()
    if not gate.down:
        lo_side.append((current, gate.down_reason, None))
    elif last_action is not None and now - last_action < svc.cooldown_down:
        lo_side.append((current, "cooldown_down", svc.cooldown_down - (now - last_action)))
    else:
        lo_side.append((current - step_down(svc, current), "step_limit", None))
        wanted = proposal if proposal is not None else current
        floor = stabilized_floor(svc, state, now, wanted)
        lo_side.append((min(floor, current), "stabilization", stabilization_left(svc, state, now, wanted)))

    # min() / max() keep the first of equal values, so list order breaks ties toward the bounds.
    hi, hi_by, hi_left = min(hi_side, key=lambda c: c[0])
    lo, lo_by, lo_left = max(lo_side, key=lambda c: c[0])
    # A count outside [min, max] is corrected whatever the other guardrails say.
    if hi < svc.min_replicas:
        hi, hi_by, hi_left = svc.min_replicas, "min_replicas", None
    if lo > svc.max_replicas:
        lo, lo_by, lo_left = svc.max_replicas, "max_replicas", None
    return Envelope(lo=lo, hi=hi, lo_by=lo_by, hi_by=hi_by, lo_left=lo_left, hi_left=hi_left)


def clamp(proposal: int, env: Envelope) -> tuple[int, list[GuardrailNote]]:
    if proposal > env.hi:
        return env.hi, [GuardrailNote(env.hi_by, proposal, env.hi, env.hi_left)]
    if proposal < env.lo:
        return env.lo, [GuardrailNote(env.lo_by, proposal, env.lo, env.lo_left)]
    return proposal, []
