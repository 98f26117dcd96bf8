"""Rules, guardrails and decisions: pure functions, tested without any I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from docktor.agent.config.load import parse_config
from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.decide import decide, remember
from docktor.agent.core.guardrails import step_down, step_up
from docktor.agent.core.state import ServiceState

BASE = """
services:
  - name: w
    command: ["true"]
    min_replicas: {min}
    max_replicas: {max}
    policy: rules
    queue: {{kind: nats, url: "nats://127.0.0.1:1", stream: S, consumer: C}}
    scale_up_by: {up}
    scale_down_by: {down}
    cooldown_up: {cu}
    cooldown_down: {cd}
    scale_down_stabilization: {stab}
    rules:
      scale_up_when:
        - {{metric: queue.backlog, op: ">", value: 500}}
        - {{metric: queue.rate_in, op: ">", value: 200}}
      scale_down_when:
        - {{metric: queue.backlog, op: "<=", value: 100}}
        - {{metric: queue.rate_in, op: "<", value: 150}}
"""


def service(min: int = 1, max: int = 10, up: int = 2, down: int = 1, cu: float = 0, cd: float = 0, stab: float = 0, **extra: Any) -> ServiceConfig:
    svc = parse_config(BASE.format(min=min, max=max, up=up, down=down, cu=cu, cd=cd, stab=stab), Path("/tmp/d.yaml"), {}).services[0]
    return svc.model_copy(update=extra) if extra else svc


BUSY = {"queue.backlog": 1500.0, "queue.rate_in": 100.0}
IDLE = {"queue.backlog": 10.0, "queue.rate_in": 20.0}
STEADY = {"queue.backlog": 300.0, "queue.rate_in": 100.0}


def test_any_up_rule_scales_up_with_a_readable_reason() -> None:
    d = decide(service(), BUSY, 3, ServiceState(), now=100)
    assert (d.decision, d.target) == ("scale_up", 5)
    assert d.reason == "queue.backlog 1500 > 500"
    assert d.matched_rules == ["queue.backlog 1500 > 500"]
    assert d.guardrails == []


def test_all_down_rules_must_match() -> None:
    assert decide(service(), IDLE, 3, ServiceState(), now=100).target == 2
    half = {"queue.backlog": 10.0, "queue.rate_in": 180.0}
    d = decide(service(), half, 3, ServiceState(), now=100)
    assert (d.decision, d.reason) == ("hold", "no rule matched")


def test_empty_down_rules_never_scale_in() -> None:
    svc = service()
    svc = svc.model_copy(update={"rules": svc.rules.model_copy(update={"scale_down_when": []})})
    assert decide(svc, IDLE, 3, ServiceState(), now=100).decision == "hold"


def test_max_replicas_clamp_is_recorded() -> None:
    d = decide(service(max=6), BUSY, 5, ServiceState(), now=100)
    assert d.target == 6
    assert [(g.name, g.before, g.after) for g in d.guardrails] == [("max_replicas", 7, 6)]
    assert d.reason.endswith("; capped at 6 by max_replicas (asked 7)")


def test_reasons_say_what_held_what_and_for_how_long() -> None:
    """``cooldown_down 7 -> 8`` read like a scale from 7 to 8; the reason now says who held what."""
    svc = service(cd=30)
    state = ServiceState()
    up = decide(svc, BUSY, 6, state, now=100)
    remember(state, up, 100, acted=True)
    d = decide(svc, IDLE, up.target, state, now=109)  # the down rules hold, but 9 s after a scale-up
    assert d.decision == "hold" and d.target == up.target
    assert d.reason.endswith(f"held at {up.target} by cooldown_down (21 s left; asked {up.target - 1})"), d.reason
    assert d.guardrails[0].as_dict() == {"name": "cooldown_down", "from": up.target - 1, "to": up.target, "left_s": 21.0}
    raised = decide(service(min=2, max=4), STEADY, 0, ServiceState(), now=100)
    assert raised.reason.endswith("raised to 2 by min_replicas (asked 0)"), raised.reason


def test_current_outside_bounds_is_corrected_even_without_rules() -> None:
    assert decide(service(min=2, max=4), STEADY, 0, ServiceState(), now=100).target == 2
    high = decide(service(min=2, max=4), STEADY, 9, ServiceState(), now=100)
    assert (high.decision, high.target) == ("scale_down", 4)
    assert high.guardrails[0].name == "max_replicas"


def test_cooldown_up_blocks_a_second_scale_up() -> None:
    svc = service(cu=30)
    state = ServiceState()
    first = decide(svc, BUSY, 2, state, now=100)
    remember(state, first, 100, acted=True)
    blocked = decide(svc, BUSY, 4, state, now=110)
    assert (blocked.decision, blocked.guardrails[0].name) == ("hold", "cooldown_up")
    assert decide(svc, BUSY, 4, state, now=131).target == 6


def test_cooldown_down_counts_from_any_action() -> None:
    svc = service(cd=60)
    state = ServiceState()
    remember(state, decide(svc, BUSY, 2, state, now=100), 100, acted=True)
    d = decide(svc, IDLE, 4, state, now=130)
    assert (d.decision, d.guardrails[0].name) == ("hold", "cooldown_down")
    assert decide(svc, IDLE, 4, state, now=161).target == 3


def test_stabilization_waits_for_a_whole_window_of_low_recommendations() -> None:
    svc = service(stab=30)
    state = ServiceState()
    for t in (0, 10, 20):  # steady: recommendations of 5
        remember(state, decide(svc, STEADY, 5, state, now=t), t, acted=False)
    d = decide(svc, IDLE, 5, state, now=30)
    assert (d.decision, d.guardrails[0].name) == ("hold", "stabilization")
    for t in (30, 40, 50):
        remember(state, decide(svc, IDLE, 5, state, now=t), t, acted=False)
    assert decide(svc, IDLE, 5, state, now=61).target == 4


def test_missing_metrics_the_hpa_way_up_on_what_is_known_never_in() -> None:
    # the case: backlog 3000 > 500 fires, only rate_in is missing: scale up
    d = decide(service(), {"queue.backlog": 3000.0}, 4, ServiceState(), now=100)
    assert (d.decision, d.target, d.missing) == ("scale_up", 6, ["queue.rate_in"])
    assert d.reason.startswith("missing queue.rate_in: scaling up on what is known: queue.backlog 3000 > 500")
    # the other up rule fires with the backlog missing
    d = decide(service(), {"queue.rate_in": 900.0}, 4, ServiceState(), now=100)
    assert (d.decision, d.target, d.missing) == ("scale_up", 6, ["queue.backlog"])
    # what is read would allow a scale-in (rate_in < 150), but the backlog is unknown: hold
    d = decide(service(), {"queue.rate_in": 20.0}, 4, ServiceState(), now=100)
    assert (d.decision, d.missing) == ("hold", ["queue.backlog"])
    assert d.reason == "missing queue.backlog: holding (never scaling in blind)"
    # below min_replicas (a first start: rates need a second read), the minimum is started and said so
    d = decide(service(), {"queue.backlog": 0.0}, 0, ServiceState(), now=100)
    assert (d.decision, d.target, d.missing, d.guardrails) == ("scale_up", 1, ["queue.rate_in"], [])
    assert d.reason == ("0 running, below min_replicas 1: starting the minimum "
                        "(missing queue.rate_in, so nothing more is sized yet)")


def test_a_sizing_policy_sizes_from_what_is_known_only_to_grow() -> None:
    svc = service(policy="target", target_per_replica=100.0)
    # rate_in (a rule's metric) missing; the backlog alone asks for 12: grow (step-limited)
    d = decide(svc, {"queue.backlog": 1200.0}, 4, ServiceState(), now=100)
    assert d.decision == "scale_up" and d.proposal == 12 and d.missing == ["queue.rate_in"]
    # the same with a small backlog would shrink: it holds instead
    assert decide(svc, {"queue.backlog": 50.0}, 4, ServiceState(), now=100).decision == "hold"
    # the backlog itself missing: counted as 0 it asks for nothing more: hold
    d = decide(svc, {"queue.rate_in": 900.0}, 4, ServiceState(), now=100)
    assert (d.decision, d.missing) == ("hold", ["queue.backlog"])


def fallback_service(rule: str, min: int = 1) -> ServiceConfig:
    text = BASE.format(min=min, max=10, up=2, down=1, cu=0, cd=0, stab=0).replace(
        'consumer: C}', f'consumer: C, on_missing: {rule}}}')
    return parse_config(text, Path("/tmp/d.yaml"), {}).services[0]


def failed(svc: ServiceConfig, reads: int) -> ServiceState:
    state = ServiceState()
    for _ in range(reads):
        state.note_reads([], [svc.sources[0].name])
    return state


def test_on_missing_applies_after_n_failed_reads_in_a_row() -> None:
    svc = fallback_service("{action: fixed, replicas: 2, after: 3}")
    assert decide(svc, {}, 6, failed(svc, 2), now=100).decision == "hold"  # not yet: 2 of 3
    d = decide(svc, {}, 6, failed(svc, 3), now=100)
    # fixed is the one way missing data scales in (the user asked for it), step by step
    assert (d.decision, d.target, d.proposal) == ("scale_down", 5, 2)
    assert d.reason.startswith("source nats failed 3 reads in a row: on_missing fixed 2 -> 2")
    assert [f.as_dict() for f in d.fallbacks] == [
        {"source": "nats", "action": "fixed", "replicas": 2, "failed_reads": 3, "target": 2}]
    # a good read ends the run
    state = failed(svc, 5)
    state.note_reads(["nats"], [])
    assert decide(svc, {}, 6, state, now=100).decision == "hold"


def test_on_missing_current_if_higher_never_lowers_and_hold_is_the_hpa_rule() -> None:
    svc = fallback_service("'current-if-higher 6'")
    assert decide(svc, {}, 3, failed(svc, 3), now=100).target == 5  # towards 6, step-limited
    assert decide(svc, {}, 8, failed(svc, 3), now=100).decision == "hold"  # never fewer than now
    held = fallback_service("hold")
    assert decide(held, {}, 8, failed(held, 30), now=100).decision == "hold"
    # fixed below current while an up rule still fires on what is read: the up rule wins
    fixed = fallback_service("'fixed 2'")
    d = decide(fixed, {"queue.rate_in": 900.0}, 6, failed(fixed, 3), now=100)
    assert d.decision == "scale_up"


def test_missing_metrics_still_correct_bounds() -> None:
    assert decide(service(min=3), {}, 1, ServiceState(), now=0).target == 3


def test_backoff_after_failed_scale_blocks_scale_up_only() -> None:
    svc = service()
    state = ServiceState()
    remember(state, decide(svc, BUSY, 2, state, now=100), 100, acted=True, ok=False)
    assert state.backoff_until == 130
    d = decide(svc, BUSY, 2, state, now=110)
    assert (d.decision, d.guardrails[0].name) == ("hold", "backoff")
    assert decide(svc, IDLE, 2, state, now=110).decision == "scale_down"
    remember(state, decide(svc, BUSY, 2, state, now=131), 131, acted=True, ok=False)
    assert state.backoff_until == 131 + 60  # exponential


def test_percent_step_uses_the_larger_step_like_hpa_select_max() -> None:
    svc = service(up=1, max=100, scale_up_percent=100)
    assert step_up(svc, 8) == 8
    assert decide(svc, BUSY, 8, ServiceState(), now=0).target == 16


def test_target_policy_sizes_by_backlog_per_replica() -> None:
    svc = service(policy="target", target_per_replica=100.0, up=100, down=100)
    assert decide(svc, {**STEADY, "queue.backlog": 650.0}, 2, ServiceState(), now=0).target == 7
    within = decide(svc, {**STEADY, "queue.backlog": 205.0}, 2, ServiceState(), now=0)
    assert within.decision == "hold"


metric_values = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False))


@settings(max_examples=400, deadline=None)
@given(
    mn=st.integers(0, 20),
    span=st.integers(0, 30),
    current=st.integers(0, 80),
    up=st.integers(1, 10),
    down=st.integers(1, 10),
    backlog=metric_values,
    rate=metric_values,
    last_up=st.one_of(st.none(), st.floats(0, 200)),
    last_down=st.one_of(st.none(), st.floats(0, 200)),
    recs=st.lists(st.tuples(st.floats(0, 200), st.integers(0, 80)), max_size=10),
    pct=st.one_of(st.none(), st.floats(1, 300)),
    policy=st.sampled_from(["rules", "target"]),
)
def test_target_always_within_bounds_and_step_limits(
    mn: int, span: int, current: int, up: int, down: int, backlog: float | None, rate: float | None,
    last_up: float | None, last_down: float | None, recs: list[tuple[float, int]], pct: float | None, policy: str,
) -> None:
    svc = service(min=mn, max=max(1, mn + span), up=up, down=down, cu=20, cd=40, stab=30,
                  scale_up_percent=pct, policy=policy, target_per_replica=50.0)
    obs = {k: v for k, v in (("queue.backlog", backlog), ("queue.rate_in", rate)) if v is not None}
    state = ServiceState(last_up_at=last_up, last_down_at=last_down)
    state.recommendations.extend(sorted(recs))
    d = decide(svc, obs, current, state, now=200)
    assert svc.min_replicas <= d.target <= svc.max_replicas
    if svc.min_replicas <= current <= svc.max_replicas:
        assert current - step_down(svc, current) <= d.target <= current + step_up(svc, current)
        if "queue.backlog" not in obs or "queue.rate_in" not in obs:
            assert d.target >= current  # never scale in blind (HPA: up on what is known only)
    elif current < svc.min_replicas:
        assert d.decision == "scale_up"  # corrected into the bounds, whatever the rules say
    else:
        assert d.decision == "scale_down"
    assert d.envelope.contains(d.target)


def test_guardrail_defaults_follow_the_policy_unless_set() -> None:
    def svc_for(extra: str) -> ServiceConfig:
        queue = '    queue: {kind: nats, stream: S, consumer: C}\n'
        return parse_config(f"services:\n  - name: a\n    command: x\n    target_per_replica: 5\n{queue}{extra}", Path("/t.yaml"), {}).services[0]

    rules = svc_for("    policy: rules\n")
    assert (rules.scale_up_by, rules.scale_up_percent, rules.cooldown_up, rules.cooldown_down) == (2, None, 15, 60)
    sizing = svc_for("")  # the default policy, docktor
    assert sizing.policy == "docktor"
    assert (sizing.scale_up_by, sizing.scale_up_percent, sizing.scale_down_percent, sizing.cooldown_up) == (4, 900, 50, 0)
    assert (sizing.cooldown_down, sizing.scale_down_stabilization) == (0, 0)  # the docktor policy plans scale-in
    assert svc_for("    cooldown_up: 45s\n").cooldown_up == 45


def test_stabilization_remembers_the_policy_recommendation_not_a_wild_proposal() -> None:
    from docktor.agent.core.decide import finish, plan
    from docktor.agent.core.proposal import Proposal

    svc = service(stab=60, max=10)
    state = ServiceState()
    p = plan(svc, IDLE, 4, state, 0)  # the rules want 3
    wild = finish(svc, p, Proposal(10_000, "an advisor gone mad"), "llm")
    assert (wild.target, wild.recommendation) == (4, 3)  # clamped: the rules allow no scale-up
    remember(state, wild, 0, acted=False)
    assert list(state.recommendations) == [(0, 3)]
    # 30 s later the idle queue scales in: the window holds 3, not the 10,000 that was asked for
    assert decide(svc, IDLE, 4, state, now=30).target == 3


def test_an_advisor_never_stops_a_scale_up_short() -> None:
    """Whatever an advisor says, a deterministic scale-up happens in full (it may go further)."""
    from docktor.agent.core.decide import Advice, conclude, plan
    from docktor.agent.core.proposal import Proposal

    svc = service(max=10)
    p = plan(svc, BUSY, 3, ServiceState(), 100)  # the rules want 5
    held = conclude(svc, p, Advice(Proposal(3, "llm: hold"), "llm", {"proposal": 3}))
    assert (held.decision, held.target, held.source) == ("scale_up", 5, "llm")
    assert [g.as_dict() for g in held.guardrails] == [{"name": "deterministic_scale_up", "from": 3, "to": 5}]
    further = conclude(svc, p, Advice(Proposal(9, "llm: more"), "llm", {"proposal": 9}))
    assert further.target == 5  # the step limit still applies to the advisor: hi stays the plan's
    # when the rules do not scale up, the advisor chooses within its envelope as before
    idle = plan(svc, IDLE, 4, ServiceState(), 100)
    assert conclude(svc, idle, Advice(Proposal(4, "llm: hold"), "llm", {"proposal": 4})).target == 4


def test_a_start_up_to_min_replicas_arms_no_cooldown() -> None:
    """Bringing a service up to min_replicas honours the bound; it is not a scale-up for the
    cooldowns: a fresh daemon with cooldown_up 600 s scales up at once when the backlog calls."""
    svc = service(min=2, cu=600)
    state = ServiceState()
    first = decide(svc, STEADY, 0, state, now=100)
    assert (first.decision, first.target, first.to_minimum) == ("scale_up", 2, True)
    remember(state, first, 100, acted=True)
    assert state.last_up_at is None
    burst = decide(svc, BUSY, 2, state, now=101)
    assert (burst.decision, burst.target) == ("scale_up", 4)
    remember(state, burst, 101, acted=True)
    assert state.last_up_at == 101  # a real scale-up arms it
    held = decide(svc, BUSY, 4, state, now=102)
    assert (held.target, held.envelope.hi_by) == (4, "cooldown_up")


def test_a_scale_up_past_the_minimum_from_below_it_arms_the_cooldown() -> None:
    svc = service(min=1, up=4, cu=600)
    state = ServiceState()
    d = decide(svc, BUSY, 0, state, now=100)
    assert (d.decision, d.target, d.to_minimum) == ("scale_up", 4, False)
    remember(state, d, 100, acted=True)
    assert state.last_up_at == 100


def _sized(extra: str) -> ServiceConfig:
    """A ``policy: target`` service as a user writes it (the loader applies the policy's defaults)."""
    text = ("services:\n  - name: t\n    command: x\n    policy: target\n    target_per_replica: 100\n"
            "    max_replicas: 50\n    cooldown_down: 0s\n    scale_down_stabilization: 0s\n"
            "    queue: {kind: nats, stream: S, consumer: C}\n" + extra)
    return parse_config(text, Path("/tmp/d.yaml"), {}).services[0]


def test_a_user_step_limit_replaces_the_policy_defaults_for_its_direction_like_hpa() -> None:
    # HPA: behavior.scaleUp.policies replaces the default policies. scale_up_by: 4 is the user's
    # whole scale-up policy: the target default scale_up_percent: 100 (6 -> 12) no longer applies.
    capped = _sized("    scale_up_by: 4\n")
    assert (capped.scale_up_by, capped.scale_up_percent) == (4, None)
    d = decide(capped, {"queue.backlog": 5000.0}, 6, ServiceState(), now=0)
    assert (d.proposal, d.target, d.guardrails[0].name) == (50, 10, "step_limit")
    # the other direction keeps the policy's defaults: at most half per check
    assert (capped.scale_down_by, capped.scale_down_percent) == (1, 50)
    assert decide(capped, {"queue.backlog": 0.0}, 10, ServiceState(), now=0).target == 5
    # and without a limit of the user's, the defaults: the larger of +4 and +100 %
    assert decide(_sized(""), {"queue.backlog": 5000.0}, 6, ServiceState(), now=0).target == 12


def test_a_user_scale_down_limit_replaces_the_default_percent() -> None:
    one = _sized("    scale_down_by: 1\n")
    assert (one.scale_down_by, one.scale_down_percent) == (1, None)
    assert decide(one, {"queue.backlog": 0.0}, 10, ServiceState(), now=0).target == 9  # not 5 (50 %)


def test_a_percent_limit_alone_is_the_whole_step_and_still_moves_from_zero() -> None:
    half = _sized("    scale_up_percent: 50\n    min_replicas: 0\n")
    assert (half.scale_up_by, half.scale_up_percent) == (None, 50)  # not the default +4
    assert (step_up(half, 6), step_up(half, 0)) == (3, 1)
    assert decide(half, {"queue.backlog": 5000.0}, 6, ServiceState(), now=0).target == 9
    assert decide(half, {"queue.backlog": 5000.0}, 0, ServiceState(), now=0).target == 1
    # both set: the larger step wins (HPA selectPolicy: Max)
    both = _sized("    scale_up_by: 4\n    scale_up_percent: 100\n")
    assert decide(both, {"queue.backlog": 5000.0}, 6, ServiceState(), now=0).target == 12
    # an explicit null is no limit of the user's: the default replica step stays
    null = _sized("    scale_up_percent: null\n")
    assert (null.scale_up_by, null.scale_up_percent) == (4, None)


def test_no_step_limit_at_all_for_a_direction_is_refused_naming_the_key() -> None:
    import pytest

    from docktor.agent.problems import UsageError

    with pytest.raises(UsageError, match="scale_up_by: no step limit for scaling up"):
        _sized("    scale_up_by: null\n    scale_up_percent: null\n")
