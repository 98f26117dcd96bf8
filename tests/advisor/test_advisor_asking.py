"""When the advisor asks the LLM (and what it shows it), how an answer is parsed (what small models do,
and what is rejected), and endpoint resolution and the LLM block's errors: pure parts.

The envelope and what an advice may add: test_advisor_envelope_bounds.py."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docktor.agent.advisor.advisor import make_advisor
from docktor.agent.advisor.client import resolve_endpoint
from docktor.agent.advisor.gate import Memory, ask_reason, direction_envelope, llm_envelope, moved
from docktor.agent.advisor.protocol import InvalidAnswer, parse_answer
from docktor.agent.config.model import LLMConfig
from docktor.agent.core.decide import Advice, conclude, plan
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.problems import UsageError
from tests.support.advisor_plans import ALLOWANCES, SVC, make_plan, scenarios, service

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


def test_the_model_is_not_asked_when_no_answer_could_change_the_scale_up():
    # the rule's +2 is the step limit: the advice may not stop short of it nor go past the step,
    # so whatever the model says, 6 executes; asking would only cost a call
    p = make_plan(SVC, backlog=500, current=4)
    e = llm_envelope(SVC, p, ServiceState(), 1000.0, False)
    assert (e.lo, e.hi, e.lo_by, e.hi_by) == (6, 6, "deterministic_scale_up", "step_limit")
    ask, why = ask_reason(LLMConfig(provider="dmr"), p, e, Memory(), 1000.0)
    assert not ask and why == "envelope allows only 6 (deterministic_scale_up/step_limit)"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(-10_000, 10_000), st.booleans(), ALLOWANCES)
def test_property_the_model_is_shown_exactly_what_can_execute(scenario, proposal, may_act, allowance):
    # the range in the prompt (and in ask_reason) is what conclude lets through: any count in it
    # executes as proposed, any count outside it is clamped to its nearest side
    svc, state, now, observations, current = scenario
    p = plan(svc, observations, current, state, now)
    shown = llm_envelope(svc, p, state, now, may_act, allowance)
    direction = direction_envelope(svc, p, state, now, may_act)
    out = conclude(svc, p, Advice(Proposal(proposal, "llm"), "llm", None, direction, allowance))
    assert out.target == min(max(proposal, shown.lo), shown.hi)
    assert (out.envelope.lo, out.envelope.hi) == (shown.lo, shown.hi)
    assert shown.contains(conclude(svc, p).target)  # keeping the deterministic decision is shown too


def test_ask_reason_on_rules_and_heartbeat():
    cfg = LLMConfig(provider="dmr", heartbeat=100, may_act_without_rules=True)
    # a sizing policy under a scale-up rule: it wants 5, the step allows x10, the advice may add
    # max(2, ceil(50 % of 5)) = 3
    wide = service(policy="target", target_per_replica=100, scale_up_percent=900, max_replicas=50)
    p = make_plan(wide, backlog=500, current=4)
    e = llm_envelope(wide, p, ServiceState(), 1000.0, True)
    assert (e.lo, e.hi) == (5, 8)
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
