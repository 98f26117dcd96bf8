"""The LLM's envelope (direction rule), when to ask, answer parsing and endpoint resolution: pure parts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docktor.agent.advisor.advisor import make_advisor
from docktor.agent.advisor.client import resolve_endpoint
from docktor.agent.advisor.gate import Memory, ask_reason, llm_envelope, moved
from docktor.agent.advisor.protocol import InvalidAnswer, parse_answer
from docktor.agent.config.model import LLMConfig, Rule, Rules
from docktor.agent.core.decide import finish, plan
from docktor.agent.core.guardrails import Gate, envelope
from docktor.agent.core.policy import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.errors import UsageError
from tests.advisor_helpers import make_plan, service

SVC = service()


def env_of(p, may_act=False, svc=SVC, state=None, now=1000.0):
    e = llm_envelope(svc, p, state or ServiceState(), now, may_act)
    return e.lo, e.hi


def test_scale_up_rule_fired_means_no_lower_than_current():
    p = make_plan(SVC, backlog=500, current=4)
    assert (p.envelope.lo, p.envelope.hi) == (4, 6)
    assert env_of(p) == (4, 6)


def test_scale_down_rules_hold_means_no_higher_than_current():
    p = make_plan(SVC, backlog=5, current=4)
    assert env_of(p) == (3, 4)


def test_no_rule_fired_means_hold_unless_may_act_without_rules():
    p = make_plan(SVC, backlog=50, current=4)
    assert env_of(p) == (4, 4)
    assert env_of(p, may_act=True) == (3, 6)  # step limits: -1 / +2


def test_may_act_still_respects_cooldowns_and_backoff():
    state = ServiceState(last_up_at=990.0, backoff_until=2000.0)
    svc = service(cooldown_up=60, cooldown_down=60)
    p = make_plan(svc, backlog=50, current=4, state=state)
    lo, hi = env_of(p, may_act=True, svc=svc, state=state)
    assert (lo, hi) == (4, 4)


def test_missing_data_never_opens_anything():
    p = plan(SVC, {"queue.rate_in": 3.0}, 4, ServiceState(), 1000.0)
    assert p.missing == ["queue.backlog"]
    assert env_of(p, may_act=True) == (4, 4)


def test_sizing_policy_direction_counts_like_a_rule():
    svc = service(policy="target", target_per_replica=100, rules=Rules(), scale_up_percent=None)
    p = make_plan(svc, backlog=800, current=4)  # the policy wants 8
    assert env_of(p, svc=svc) == (4, 6)


def test_current_outside_bounds_is_corrected_even_for_the_llm():
    p = make_plan(SVC, backlog=50, current=0)  # below min_replicas 1
    assert env_of(p) == (1, 1)


# --------------------------------------------------------------------------- the property


@st.composite
def scenarios(draw):
    lo = draw(st.integers(0, 5))
    hi = draw(st.integers(max(lo, 1), 30))
    svc = service(
        min_replicas=lo,
        max_replicas=hi,
        scale_up_by=draw(st.integers(1, 5)),
        scale_down_by=draw(st.integers(1, 5)),
        cooldown_up=draw(st.sampled_from([0, 30])),
        cooldown_down=draw(st.sampled_from([0, 60])),
        scale_down_stabilization=draw(st.sampled_from([0, 60])),
        policy=draw(st.sampled_from(["rules", "target", "docktor"])),
        processing_time=0.5,
        target_per_replica=50,
        rules=Rules(
            scale_up_when=[Rule(metric="queue.backlog", op=">", value=draw(st.sampled_from([100, 300])))],
            scale_down_when=draw(st.sampled_from([[], [Rule(metric="queue.backlog", op="<", value=20)]])),
        ),
    )
    now = 1000.0
    state = ServiceState(
        last_up_at=draw(st.sampled_from([None, 990.0, 900.0])),
        last_down_at=draw(st.sampled_from([None, 980.0, 800.0])),
        backoff_until=draw(st.sampled_from([None, 1010.0])),
    )
    for t, n in draw(st.lists(st.tuples(st.floats(900, 999), st.integers(0, 40)), max_size=4)):
        state.recommendations.append((t, n))
    observations = {"queue.rate_in": 10.0}
    backlog = draw(st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)))  # None: missing
    if backlog is not None:
        observations["queue.backlog"] = backlog
    current = draw(st.integers(0, 40))
    return svc, state, now, observations, current


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(-10_000, 10_000), st.booleans())
def test_property_executed_target_stays_within_the_envelope(scenario, proposal, may_act):
    svc, state, now, observations, current = scenario
    p = plan(svc, observations, current, state, now)
    narrow = llm_envelope(svc, p, state, now, may_act)
    d = finish(svc, p, Proposal(proposal, "llm"), "llm", envelope=narrow)
    assert narrow.lo <= d.target <= narrow.hi
    assert svc.min_replicas <= d.target <= svc.max_replicas or current < svc.min_replicas or current > svc.max_replicas
    ev = p.evaluation
    if not may_act or p.missing or ev.up_fired or ev.down_fired or p.proposal.target != current:
        # the LLM's envelope is the plan's envelope narrowed, never widened
        assert p.envelope.lo <= narrow.lo <= narrow.hi <= p.envelope.hi
    else:
        # may_act_without_rules: the guardrails' envelope with the direction gate open
        opened = envelope(svc, state, current, Gate(up=True, down=True), now, 0)
        assert opened.lo <= d.target <= opened.hi
    # the direction rule; for a sizing policy the policy's own direction counts like a rule
    pinned = min(max(current, p.envelope.lo), p.envelope.hi)
    sizes = svc.policy != "rules"
    if p.missing:
        pass
    elif ev.up_fired or (sizes and p.proposal.target > current):
        assert d.target >= pinned
    elif ev.down_fired or (sizes and p.proposal.target < current):
        assert d.target <= pinned
    elif not may_act:
        assert d.target == pinned
    # holding is always possible when the plan's envelope allows it
    if p.envelope.contains(current):
        assert narrow.contains(current)


# --------------------------------------------------------------------------- when to ask


def test_moved_reports_relative_changes_appearances_and_absences():
    assert moved({"a": 100}, {"a": 110}, 0.2) is None
    assert "a moved 100 -> 150" in moved({"a": 100}, {"a": 150}, 0.2)
    assert moved({"a": 0}, {"a": 0.1}, 0.2) is None  # changes near zero count against a floor of 1
    assert moved({"a": 0}, {"a": 5}, 0.2) is not None
    assert moved({"a": 1}, {"a": 1, "b": 2}, 0.2) == "b appeared"
    assert moved({"a": 1, "b": 2}, {"a": 1}, 0.2) == "b went missing"


def test_ask_reason_prefers_no_call_when_the_envelope_is_a_single_point():
    cfg = LLMConfig(provider="dmr")
    svc = service(cooldown_up=60)
    p = make_plan(svc, backlog=500, current=4, state=ServiceState(last_up_at=990.0))
    e = llm_envelope(svc, p, ServiceState(last_up_at=990.0), 1000.0, False)
    ask, why = ask_reason(cfg, p, e, Memory(), 1000.0)
    assert not ask and "envelope allows only 4" in why and "cooldown_up" in why


def test_ask_reason_on_rules_and_heartbeat():
    cfg = LLMConfig(provider="dmr", heartbeat=100, may_act_without_rules=True)
    p = make_plan(SVC, backlog=500, current=4)
    e = llm_envelope(SVC, p, ServiceState(), 1000.0, True)
    assert ask_reason(cfg, p, e, Memory(asked_at=999.0, observations=dict(p.observations)), 1000.0)[1].startswith("scale-up rule fired")
    quiet = make_plan(SVC, backlog=50, current=4)
    e = llm_envelope(SVC, quiet, ServiceState(), 1000.0, True)
    mem = Memory(asked_at=950.0, observations=dict(quiet.observations))
    assert ask_reason(cfg, quiet, e, mem, 1000.0)[0] is False
    assert ask_reason(cfg, quiet, e, mem, 1050.0) == (True, "heartbeat: last asked 100 s ago")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, target, action",
    [
        ('{"action":"scale_up","target_replicas":5,"confidence":0.5,"reason":"x"}', 5, "scale_up"),
        ('Sure! {"action":"SCALE-DOWN","target_replicas":"2.0","confidence":"1","reason":"x"} done', 2, "scale_down"),
        ('{"action":"hold","target_replicas":9,"confidence":0.5,"reason":"x"}', 3, "hold"),  # hold wins
        ('{"action":"scale_down","target_replicas":7,"confidence":0.5,"reason":"x"}', 3, "hold"),  # contradiction
    ],
)
def test_parse_answer_coerces_what_small_models_do(text, target, action):
    answer, _ = parse_answer(text, current=3)
    assert (answer.target_replicas, answer.action) == (target, action)


@pytest.mark.parametrize(
    "text, error",
    [
        ("", "empty"),
        ("four replicas please", "no JSON object"),
        ('{"action":"scale_up","target_replicas":4.5,"confidence":0.5}', "target_replicas"),
        ('{"action":"scale_up","target_replicas":-1,"confidence":0.5}', "greater than or equal to 0"),
        ('{"action":"scale_up","target_replicas":4,"confidence":7}', "confidence"),
        ('{"action":"explode","target_replicas":4,"confidence":0.5}', "action"),
    ],
)
def test_parse_answer_rejects_the_rest(text, error):
    with pytest.raises(InvalidAnswer, match=error):
        parse_answer(text, current=3)


# --------------------------------------------------------------------------- endpoints


def test_provider_defaults():
    dmr = resolve_endpoint(LLMConfig(provider="dmr"), {})
    assert (dmr.base_url, dmr.model, dmr.api_key) == ("http://localhost:12434/engines/llama.cpp/v1", "ai/llama3.2", None)
    assert resolve_endpoint(LLMConfig(provider="ollama"), {}).base_url == "http://localhost:11434/v1"
    oa = resolve_endpoint(LLMConfig(provider="openai"), {"OPENAI_API_KEY": "sk-abc"})
    assert oa.api_key == "sk-abc" and "sk-abc" not in repr(oa) and "sk-abc" not in str(oa.public())


def test_bad_llm_blocks_are_usage_errors_naming_the_field():
    with pytest.raises(UsageError, match="llm.api_key_env: environment variable OPENAI_API_KEY is not set"):
        resolve_endpoint(LLMConfig(provider="openai"), {})
    with pytest.raises(UsageError, match="llm.base_url: required"):
        resolve_endpoint(LLMConfig(provider="openai-compatible", model="m"), {})
    with pytest.raises(UsageError, match="llm.model: required"):
        resolve_endpoint(LLMConfig(provider="openai-compatible", base_url="http://x/v1"), {})
    assert make_advisor(LLMConfig()) is None
