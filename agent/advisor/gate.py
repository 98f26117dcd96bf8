"""When the LLM may be asked, and what it may choose from: pure functions, no I/O.

* :func:`llm_envelope`: the part of the guardrail envelope the LLM may choose from (the
  direction rule: it moves only where the deterministic side allows; and only adding capacity
  to the deterministic decision, within the ``llm:`` allowance);
* :func:`ask_reason`: whether this tick is worth a call (something fired or moved, or the
  heartbeat is due) and why, for the log;
* the per-service circuit breaker after failed calls (:func:`breaker_backoff`,
  :func:`breaker_open`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from docktor.agent.advisor.protocol import LLMAnswer
from docktor.agent.config.model import LLMConfig, ServiceConfig
from docktor.agent.core.decide import DEFAULT_ALLOWANCE, Allowance, Plan, advice_envelope, deterministic_source, finish
from docktor.agent.core.guardrails import Envelope, Gate, envelope
from docktor.agent.core.policies import POLICIES
from docktor.agent.core.state import ServiceState

# --------------------------------------------------------------------------- the direction rule


def llm_envelope(
    svc: ServiceConfig,
    plan: Plan,
    state: ServiceState,
    now: float,
    may_act_without_rules: bool,
    allowance: Allowance = DEFAULT_ALLOWANCE,
) -> Envelope:
    """What an LLM's answer can execute: the direction rule's envelope (:func:`direction_envelope`)
    narrowed as :func:`docktor.agent.core.decide.conclude` will narrow it (an advice only adds
    capacity to the deterministic decision, at most ``allowance`` above it).

    This is the range the model is shown and the one :func:`ask_reason` looks at, so the model
    is never told of counts that cannot happen, nor asked when only one count can.
    """
    deterministic = finish(svc, plan, plan.proposal, deterministic_source(svc))
    return advice_envelope(direction_envelope(svc, plan, state, now, may_act_without_rules), deterministic, allowance)


def direction_envelope(svc: ServiceConfig, plan: Plan, state: ServiceState, now: float, may_act_without_rules: bool) -> Envelope:
    """The part of the guardrail envelope the LLM may choose from, by direction.

    The LLM moves only in a direction the deterministic side allows: a scale-up rule fired (or,
    for a sizing policy, the policy wants more) -> no lower than current; the scale-down rules all
    hold (or the policy wants fewer) -> no higher than current; neither -> hold. With
    ``may_act_without_rules`` the last case gets the guardrails' envelope with the direction gate
    open instead: bounds, step limits, cooldowns, stabilization and back-off still apply. Missing
    data never opens anything. Holding is always inside the result when the plan's envelope holds
    current.
    """
    env = plan.envelope
    cur = plan.current
    pinned = min(max(cur, env.lo), env.hi)  # "current", corrected into the bounds
    ev = plan.evaluation
    sizes = not POLICIES[svc.policy].rules_drive
    wants_up = ev.up_fired or (sizes and plan.proposal.target > cur)
    wants_down = not ev.up_fired and (ev.down_fired or (sizes and plan.proposal.target < cur))
    if plan.missing:
        return env
    if wants_up:
        return env if env.lo >= pinned else replace(env, lo=pinned, lo_by="llm_direction", lo_left=None)
    if wants_down:
        return env if env.hi <= pinned else replace(env, hi=pinned, hi_by="llm_direction", hi_left=None)
    if may_act_without_rules:
        # stabilization then rests on past recommendations only: this tick's is the LLM's to make
        return envelope(svc, state, cur, Gate(up=True, down=True), now, 0)
    if env.lo < pinned:
        env = replace(env, lo=pinned, lo_by="llm_direction", lo_left=None)
    if env.hi > pinned:
        env = replace(env, hi=pinned, hi_by="llm_direction", hi_left=None)
    return env


# --------------------------------------------------------------------------- when to ask


@dataclass
class Memory:
    """Per service: the last call, for deciding whether the next tick needs one."""

    asked_at: float | None = None
    observations: dict[str, float] = field(default_factory=dict)
    answer: LLMAnswer | None = None  # last valid answer; None after a failure (no stale reuse)
    failures: int = 0  # consecutive failed calls; 0 = the breaker is closed
    open_until: float | None = None  # no call before this time (the ``now`` clock)
    last_error: str = ""


def breaker_backoff(failures: int, check_interval: float, heartbeat: float) -> float:
    """Seconds without calls after ``failures`` consecutive failed calls.

    Two check intervals after the first failure (so the next tick does not ask), doubling with
    every further one, never longer than the heartbeat: a recovered endpoint is asked again at
    least as often as a quiet service would be.
    """
    return min(check_interval * 2.0 ** min(failures, 30), heartbeat)


def breaker_open(mem: Memory, now: float, check_interval: float) -> bool:
    """Whether the back-off still runs at ``now``.

    Ticks jitter around their schedule (a tick's clock is read after its observations), so a
    tick within half an interval of the end counts as after it; otherwise whether the tick on the
    boundary asks would be a coin toss.
    """
    return mem.open_until is not None and now + check_interval / 2 < mem.open_until


def moved(before: Mapping[str, float], after: Mapping[str, float], threshold: float) -> str | None:
    """The first observation that changed by more than ``threshold`` (relative), or appeared/vanished."""
    for key in sorted(before.keys() | after.keys()):
        if key not in before or key not in after:
            return f"{key} {'appeared' if key in after else 'went missing'}"
        a, b = before[key], after[key]
        base = max(abs(a), abs(b))
        if base == 0:
            continue
        # an absolute floor keeps 0 -> 1 message from counting as an infinite change
        change = abs(b - a) / max(abs(a), 1.0)
        if change > threshold:
            return f"{key} moved {a:g} -> {b:g} ({change:.0%})"
    return None


def ask_reason(config: LLMConfig, plan: Plan, env: Envelope, mem: Memory, now: float) -> tuple[bool, str]:
    """Whether to call the LLM this tick, and why (or why not), for the log."""
    if env.lo == env.hi:
        return False, f"envelope allows only {env.lo} ({env.lo_by}/{env.hi_by})"
    ev = plan.evaluation
    if ev.up_fired:
        return True, "scale-up rule fired: " + ", ".join(r.text() for r in ev.up if r.matched)
    if ev.down_fired:
        return True, "scale-down rules hold"
    if plan.proposal.target != plan.current:
        return True, f"policy proposes {plan.proposal.target} (now {plan.current})"
    if mem.asked_at is None:
        return True, "first decision for this service"
    change = moved(mem.observations, plan.observations, config.ask_on_change)
    if change:
        return True, change
    if now - mem.asked_at >= config.heartbeat:
        return True, f"heartbeat: last asked {now - mem.asked_at:.0f} s ago"
    return False, f"nothing changed beyond {config.ask_on_change:.0%} since the last call {now - mem.asked_at:.0f} s ago"
