"""One decision for one service: rules -> policy proposal -> (advice) -> guardrails -> target.

:func:`step` is the whole decision, and both the daemon and the simulator run it:

1. :func:`plan` does everything that does not depend on who proposes: the rules' evaluation,
   what is missing, the direction gate, the guardrail envelope and the policy's own proposal;
2. an optional advisor (the LLM, or a test's adversary) looks at the plan and may return
   :class:`Advice`: another proposal and the narrower envelope it must stay in;
3. :func:`conclude` clamps whichever proposal wins into the envelope and says why. An advice
   only ever adds capacity to the deterministic decision, and at most its :class:`Allowance`
   (:func:`advice_envelope`).

All of these are pure. The caller acts on the decision (or not) and then advances the state
with :func:`docktor.agent.core.state.remember`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from docktor.agent.config.model import LLMConfig, ServiceConfig
from docktor.agent.core import recalled
from docktor.agent.core.carried import Carried, Sized
from docktor.agent.core.derived import derive
from docktor.agent.core.effect import Expectation, due, expect
from docktor.agent.core.guardrails import Envelope, Gate, GuardrailNote, clamp, envelope
from docktor.agent.core.headroom import with_headroom
from docktor.agent.core.policies import LOWER_BOUNDS, POLICIES
from docktor.agent.core.proposal import PolicySpec, Proposal
from docktor.agent.core.rules import Evaluation, evaluate
from docktor.agent.core.saturation import assess, hold, observe
from docktor.agent.core.state import ServiceState, backoff_delay

Action = Literal["scale_up", "scale_down", "hold"]
#: who proposed: the rules, the sizing policy, the LLM, a fallback; or from outside the loop,
#: an operator (``docktor scale``) or an assistant over MCP
Proposer = Literal["rules", "policy", "llm", "fallback", "manual", "mcp"]


@dataclass(frozen=True)
class Fallback:
    """A source's ``on_missing`` fallback, in force because it failed ``failed_reads`` reads in a row."""

    source: str
    action: str
    replicas: int
    failed_reads: int
    target: int

    def text(self) -> str:
        return (f"source {self.source} failed {self.failed_reads} reads in a row: "
                f"on_missing {self.action} {self.replicas} -> {self.target}")

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "action": self.action, "replicas": self.replicas,
                "failed_reads": self.failed_reads, "target": self.target}


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
    #: sources' on_missing fallbacks in force (only while metrics are missing)
    fallbacks: tuple[Fallback, ...] = ()
    #: the verdicts, throughput and correction the plan used (core/carried.py)
    carried: Carried | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Allowance:
    """How far an advice may go above the deterministic target (``llm.max_extra_replicas``,
    ``llm.max_extra_percent``): the larger of ``replicas`` and ``percent`` of that target."""

    replicas: int
    percent: float

    @classmethod
    def of(cls, llm: LLMConfig) -> Allowance:
        return cls(llm.max_extra_replicas, llm.max_extra_percent)

    def above(self, base: int) -> int:
        """Replicas an advice may add to ``base`` (the deterministic target)."""
        # a share past any real fleet is capped before rounding, so a huge percentage cannot overflow
        share = min(max(base, 0) * self.percent / 100, 1e12)
        return max(self.replicas, math.ceil(share))


#: the allowance of an ``llm:`` block that sets none, and of an advisor that names none
DEFAULT_ALLOWANCE = Allowance.of(LLMConfig())


@dataclass(frozen=True)
class Advice:
    """What an advisor says about a plan."""

    #: None: keep the deterministic proposal (the advisor declined, failed or was not asked)
    proposal: Proposal | None
    source: Proposer
    #: the advisor's record for the decision log (the LLM's latency, tokens, reason); never a secret
    record: Mapping[str, Any] | None = None
    #: the envelope the proposal must stay in; None: the plan's
    envelope: Envelope | None = None
    #: how far above the deterministic target the proposal may go (the advisor's ``llm:`` block)
    allowance: Allowance = DEFAULT_ALLOWANCE


#: an advisor as :func:`step` calls it
Advise = Callable[[Plan], "Advice | None"]


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
    source: Proposer
    policy: str
    observations: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    #: the deterministic policy's count, within [min, max]: what scale-down stabilization
    #: remembers, so an advisor's wild proposal can never hold replicas up for a whole window
    recommendation: int = 0
    #: the advisor's record (see :class:`Advice`), for the decision log
    advice: Mapping[str, Any] | None = None
    fallbacks: tuple[Fallback, ...] = ()
    #: what the proposer (the policy, the LLM, an operator) wants, within [min, max]: where the
    #: service is heading once the step limits and clocks let it. ``target`` is what the guardrails
    #: let happen this tick; a one-shot or advisory decision shows both, apart.
    wanted: int = 0
    #: what this decision's change should do, judged a few checks later if it is executed
    expecting: Expectation | None = None
    #: the effectiveness records of earlier executed actions judged at this tick (core/effect.py)
    effects: tuple[dict[str, Any], ...] = ()
    #: the plan's verdicts, throughput and correction, for remember() to keep (core/carried.py)
    carried: Carried | None = field(default=None, compare=False)

    @property
    def changes(self) -> bool:
        return self.target != self.current

    @property
    def to_minimum(self) -> bool:
        """A scale-up that only brings the service up to ``min_replicas`` (a first start, or a count
        set below the bound by hand). It is the bound being honoured, not a scaling decision, so it
        arms no cooldown: a fresh daemon with ``cooldown_up: 600s`` must not hold a service at its
        minimum for ten minutes under a backlog (KEDA's ``initialCooldownPeriod`` is the explicit
        opposite wish; Docktor has no such delay)."""
        return self.decision == "scale_up" and self.envelope.lo_by == "min_replicas" and self.target <= self.envelope.lo


def deterministic_source(svc: ServiceConfig) -> Proposer:
    """Who proposes when no advisor does: the rules (threshold policy) or the sizing policy."""
    return "rules" if svc.policy == "rules" else "policy"


def gate_for(svc: ServiceConfig, ev: Evaluation, missing: list[str], fallbacks: tuple[Fallback, ...] = ()) -> Gate:
    if missing:
        # The HPA's rule: with metrics missing, scale up if the ones read call for it; never
        # scale in blind. The one exception is the user's own: on_missing: fixed N.
        down = any(f.action == "fixed" for f in fallbacks) and not ev.up_fired
        up = ev.up_fired or bool(fallbacks) if POLICIES[svc.policy].rules_drive else True
        return Gate(up=up, down=down, up_reason="missing_metrics", down_reason="missing_metrics")
    if POLICIES[svc.policy].rules_drive:
        return Gate(up=ev.up_fired, down=ev.down_fired)
    down_ok = (not svc.rules.scale_down_when or ev.down_fired) and not ev.up_fired
    return Gate(up=True, down=down_ok, down_reason="rules")


def plan(
    svc: ServiceConfig, observations: Mapping[str, float], current: int, state: ServiceState, now: float
) -> Plan:
    # Per-replica figures need a replica count; callers without an executor reading use current.
    obs = derive({"replicas.running": float(current), **observations})
    # "scaling is not helping" (core/saturation.py): an observation rules may alert on, and a hold
    # (with the verdicts a previous daemon saved: core/recalled.py)
    sat = recalled.saturation(assess(svc, state.series(obs, now)), state, now) if "queue.rate_out" in obs else None
    if sat is not None:
        obs.update(observe(sat))
    ev = evaluate(svc.rules, obs)
    spec = POLICIES[svc.policy]
    missing = sorted((svc.rule_metrics() | spec.required(svc)) - obs.keys())
    fallbacks: tuple[Fallback, ...] = ()
    sized: Sized | None = None  # the docktor policy's, sized on the full reading
    if missing:
        proposal = propose_from_what_is_known(svc, spec, obs, current, state, ev, now, missing)
        fallbacks = active_fallbacks(svc, state, current)
        if fallbacks:
            proposal = with_fallbacks(proposal, fallbacks, current)
    else:
        proposal = spec.propose(svc, obs, current, state, ev, now)
        sized = proposal.sized
        proposal = with_headroom(svc, proposal, obs, current, state, now)
        if sat is not None and svc.policy == "docktor":
            proposal = hold(svc, sat, proposal, current, now)
    gate = gate_for(svc, ev, missing, fallbacks)
    env = envelope(svc, state, current, gate, now, proposal.target)
    return Plan(svc.name, current, obs, ev, missing, gate, env, proposal, fallbacks, Carried(sat, sized))


def propose_from_what_is_known(
    svc: ServiceConfig,
    spec: PolicySpec,
    obs: Mapping[str, float],
    current: int,
    state: ServiceState,
    ev: Evaluation,
    now: float,
    missing: list[str],
) -> Proposal:
    """The HPA's rule for missing metrics: a proposal only when what *is* known calls for more.

    The rules count with the metrics read (a missing metric fails its rule). A sizing policy
    sizes with each missing required metric at its least possible value (``LOWER_BOUNDS``: no
    backlog, no arrivals): a lower bound of what the full data would ask for, so it is used only
    when it is above the current count. Anything else holds; the gate keeps scale-in closed.
    """
    label = f"missing {', '.join(missing)}"
    absent = sorted(spec.required(svc) - obs.keys())
    unknowable = [m for m in absent if m not in LOWER_BOUNDS]
    if unknowable:
        return Proposal(current, f"{label}: holding (nothing to size from without {', '.join(unknowable)})")
    known = spec.propose(svc, {**obs, **{m: LOWER_BOUNDS[m] for m in absent}}, current, state, ev, now)
    if known.target > current:
        counted = f" (counting {', '.join(absent)} as 0, the least it can be)" if absent else ""
        return Proposal(known.target, f"{label}: scaling up on what is known{counted}: {known.reason}")
    if current < svc.min_replicas:
        # Below the floor (a first start, replicas that died): the minimum is owed whatever the
        # data says, so say that rather than "holding" and then being raised by a guardrail.
        return Proposal(
            svc.min_replicas,
            f"{current} running, below min_replicas {svc.min_replicas}: starting the minimum "
            f"({label}, so nothing more is sized yet)",
        )
    return Proposal(current, f"{label}: holding (never scaling in blind)")


def active_fallbacks(svc: ServiceConfig, state: ServiceState, current: int) -> tuple[Fallback, ...]:
    """The ``on_missing`` fallbacks of the sources that failed at least ``after`` reads in a row."""
    out: list[Fallback] = []
    for spec in svc.sources:
        rule = spec.on_missing
        failed = state.failed_reads.get(spec.name, 0)
        if rule.action == "hold" or rule.replicas is None or failed < rule.after:
            continue
        target = rule.replicas if rule.action == "fixed" else max(current, rule.replicas)
        out.append(Fallback(spec.name, rule.action, rule.replicas, failed, target))
    return tuple(out)


def with_fallbacks(known: Proposal, fallbacks: tuple[Fallback, ...], current: int) -> Proposal:
    """Like the HPA over several metrics: the largest of the fallbacks' targets and of what the
    metrics still read call for (which counts only when it is a scale-up)."""
    target = max(f.target for f in fallbacks)
    why = "; ".join(f.text() for f in fallbacks)
    if known.target > current and known.target > target:
        return Proposal(known.target, f"{known.reason}; {why}")
    return Proposal(target, why)


def finish(
    svc: ServiceConfig,
    p: Plan,
    proposal: Proposal,
    source: Proposer,
    *,
    envelope: Envelope | None = None,
    advice: Mapping[str, Any] | None = None,
) -> Decision:
    """Clamp ``proposal`` into the plan's envelope (or a narrower one, e.g. the LLM's)."""
    env = envelope or p.envelope
    target, notes = clamp(proposal.target, env)
    action: Action = "scale_up" if target > p.current else "scale_down" if target < p.current else "hold"
    reason = proposal.reason
    if notes:
        reason += "; " + ", ".join(n.text(p.current) for n in notes)
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
        advice=advice,
        fallbacks=p.fallbacks,
        wanted=min(max(proposal.target, svc.min_replicas), svc.max_replicas),
        carried=p.carried,
    )


def advice_envelope(env: Envelope, deterministic: Decision, allowance: Allowance) -> Envelope:
    """The part of an advice's envelope ``env`` it may land in, given the deterministic decision.

    The advisor only ever adds capacity to what the deterministic side does, and only so much:

    * when the deterministic decision scales up, no lower than its target: an advice never stops
      a scale-up short (``deterministic_scale_up``);
    * when it scales in, no lower than its target and no higher than the current count: an advice
      may keep replicas it would remove, never remove more, never turn it into a scale-up
      (``deterministic_scale_down``). For a sizing policy the target is the fewest replicas its
      plan says meet the SLO, so fewer would be a predicted miss;
    * always, no higher than the target plus the allowance (``llm_extra``); when the deterministic
      decision holds, its target is the current count. The lower side is then ``env``'s: with
      ``may_act_without_rules`` the user let the advice scale in, inside the guardrails.

    The guardrails in ``env`` (bounds, step limits, cooldowns...) still apply: the result is the
    intersection, and it always holds the deterministic target, so keeping it is always possible.
    """
    d, current, action = deterministic.target, deterministic.current, deterministic.decision
    # llm_envelope narrows this plan's envelope, which holds d; an envelope that does not is
    # widened to d rather than trusted to rule the deterministic decision out
    lo, lo_by, lo_left = (env.lo, env.lo_by, env.lo_left) if env.lo <= d else (d, env.lo_by, None)
    hi, hi_by, hi_left = (env.hi, env.hi_by, env.hi_left) if env.hi >= d else (d, env.hi_by, None)
    if action != "hold":
        # named so even where a guardrail's side is already there (the plan's stabilization side
        # starts at the policy's own proposal): for an advice, the deterministic target is why
        lo, lo_by, lo_left = d, f"deterministic_{action}", None
    if action == "scale_down" and hi > current:
        hi, hi_by, hi_left = current, "deterministic_scale_down", None
    top = d + allowance.above(d)
    if hi > top:
        hi, hi_by, hi_left = top, "llm_extra", None
    return Envelope(lo, hi, lo_by, hi_by, lo_left=lo_left, hi_left=hi_left)


def conclude(svc: ServiceConfig, p: Plan, advice: Advice | None = None) -> Decision:
    """The decision for ``p``: the advice's proposal when it has one, else the policy's, clamped.

    An advice's proposal is clamped into its envelope narrowed by :func:`advice_envelope`: never
    short of a deterministic scale-up, never below a deterministic scale-in, never more than its
    allowance above the deterministic target. An advice without a proposal is the deterministic
    decision, recorded with the advice's source and record.
    """
    deterministic = finish(svc, p, p.proposal, deterministic_source(svc))
    if advice is None:
        return deterministic
    if advice.proposal is None:
        # the plan's envelope, not the advice's: an advisor that declined must not change the decision
        return finish(svc, p, p.proposal, advice.source, advice=advice.record)
    env = advice_envelope(advice.envelope or p.envelope, deterministic, advice.allowance)
    return finish(svc, p, advice.proposal, advice.source, envelope=env, advice=advice.record)


def step(
    svc: ServiceConfig,
    observations: Mapping[str, float],
    current: int,
    state: ServiceState,
    now: float,
    advise: Advise | None = None,
) -> Decision:
    """One whole decision: plan, ask the advisor (if any) about the plan, conclude."""
    p = plan(svc, observations, current, state, now)
    d = conclude(svc, p, advise(p) if advise is not None else None)
    if d.changes or any(e.due_at <= now for e in state.expectations):
        points = state.series(d.observations, now)
        sized = None if p.carried is None else p.carried.sized
        d = replace(d, expecting=expect(svc, points, d.decision, d.current, d.target, sized),
                    effects=due(state.expectations, points))
    return d


def decide(
    svc: ServiceConfig, observations: Mapping[str, float], current: int, state: ServiceState, now: float
) -> Decision:
    """The deterministic decision (no advisor)."""
    return step(svc, observations, current, state, now)


def remember(
    state: ServiceState,
    decision: Decision,
    now: float,
    *,
    acted: bool,
    ok: bool = True,
    observations: dict[str, float] | None = None,
) -> None:
    """Advance ``state`` after a tick. ``acted``: the executor was asked to scale; ``ok``: it worked."""
    state.recommendations.append((now, decision.recommendation))
    if decision.carried is not None:
        state.carried = decision.carried.after(state.carried)
    if observations is not None:
        state.history.append((now, dict(observations)))
    # judged at this tick (decision.effects), or past due
    state.expectations[:] = [e for e in state.expectations if e.due_at > now]
    if not acted:
        return
    if ok:
        if decision.expecting is not None:
            state.expectations.append(decision.expecting)
        state.failures = 0
        state.backoff_until = None
        if decision.decision == "scale_up" and not decision.to_minimum:
            state.last_up_at = now
        elif decision.decision == "scale_down":
            state.last_down_at = now
    else:
        state.failures += 1
        state.backoff_until = now + backoff_delay(state.failures)
