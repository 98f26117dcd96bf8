"""The LLM's envelope: the direction rule, the property that an executed target stays within it, and
what an advice may add to the deterministic decision (only capacity, at most its allowance, also for
the simulator's adversary; the allowance's config). Pure parts.

When to ask, answer parsing and endpoint resolution: test_advisor_asking.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docktor.agent.advisor.gate import direction_envelope
from docktor.agent.config.load import parse_config
from docktor.agent.config.model import LLMConfig, Rules
from docktor.agent.core.decide import DEFAULT_ALLOWANCE, Advice, Allowance, conclude, finish, plan
from docktor.agent.core.guardrails import Envelope, Gate, envelope
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.problems import UsageError
from docktor.agent.runtime.exporter import GUARDRAILS
from docktor.agent.sim.advisors import adversarial_advisor
from tests.support.advisor_plans import ALLOWANCES, SVC, make_plan, scenarios, service


def env_of(p, may_act=False, svc=SVC, state=None, now=1000.0):
    e = direction_envelope(svc, p, state or ServiceState(), now, may_act)
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(-10_000, 10_000), st.booleans())
def test_property_executed_target_stays_within_the_envelope(scenario, proposal, may_act):
    svc, state, now, observations, current = scenario
    p = plan(svc, observations, current, state, now)
    narrow = direction_envelope(svc, p, state, now, may_act)
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


# --------------------------------------------------------------------------- an advice only adds capacity

#: a docktor.yaml with one llm: setting to fill in
CONFIG = """
llm: {{provider: none, {extra}}}
services:
  - name: worker
    command: ["true"]
    policy: rules
    queue: {{kind: nats, url: "nats://127.0.0.1:9", stream: S, consumer: C}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 100}}]
"""


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(-10_000, 10_000), st.booleans(), ALLOWANCES)
def test_property_an_advice_only_adds_capacity_and_at_most_its_allowance(scenario, proposal, may_act, allowance):
    svc, state, now, observations, current = scenario
    p = plan(svc, observations, current, state, now)
    narrow = direction_envelope(svc, p, state, now, may_act)
    det = conclude(svc, p)  # the deterministic decision
    d, extra = det.target, allowance.above(det.target)

    def advised(n: int):
        return conclude(svc, p, Advice(Proposal(n, "llm"), "llm", None, narrow, allowance))

    out = advised(proposal)
    # the guardrails and the direction rule still apply on top: the result is inside both
    assert narrow.lo <= out.target <= narrow.hi
    assert out.envelope.lo >= narrow.lo and out.envelope.hi <= narrow.hi
    if det.decision == "scale_down":
        assert d <= out.target <= current and out.target <= d + extra
    elif det.decision == "scale_up":
        assert d <= out.target <= d + extra
    else:  # holding: the current count is the deterministic one, the lower side the LLM's envelope's
        assert d == current and out.target <= current + extra
    # holding the deterministic target is always possible, and clamps nothing
    assert narrow.contains(d)
    kept = advised(d)
    assert (kept.target, kept.guardrails, kept.source) == (d, [], "llm")
    # every clamp is named (with a name the metrics know) and said in the reason
    if out.target == proposal:
        assert out.guardrails == []
    else:
        (note,) = out.guardrails
        assert note.name in GUARDRAILS and (note.before, note.after) == (proposal, out.target)
        assert note.text(current) in out.reason
        if proposal < d and det.decision != "hold":
            assert note.name == f"deterministic_{det.decision}"
        cap = min(narrow.hi, current) if det.decision == "scale_down" else narrow.hi
        if proposal > d + extra and cap > d + extra:
            assert note.name == "llm_extra"


def test_an_advice_never_scales_in_further_than_the_deterministic_decision():
    """The sizing policy wants 7 of 8: the step limit (-50 %) would let an advice of 0 execute 4."""
    svc = service(policy="target", target_per_replica=100, rules=Rules(), scale_down_percent=50, min_replicas=0)
    p = make_plan(svc, backlog=700, current=8)
    narrow = direction_envelope(svc, p, ServiceState(), 1000.0, False)
    # the plan's scale-down side starts at the policy's own proposal (the stabilization floor)
    assert (narrow.lo, narrow.hi, narrow.lo_by) == (7, 8, "stabilization")
    zero = conclude(svc, p, Advice(Proposal(0, "llm: none needed"), "llm", None, narrow))
    assert (zero.decision, zero.target, zero.source) == ("scale_down", 7, "llm")
    assert [g.as_dict() for g in zero.guardrails] == [{"name": "deterministic_scale_down", "from": 0, "to": 7}]
    assert zero.reason.endswith("kept at 7 by the deterministic scale-down (asked 0)")
    # it may keep the replicas the policy would remove, never more than there are
    assert conclude(svc, p, Advice(Proposal(8, "llm: keep"), "llm", None, narrow)).target == 8
    more = conclude(svc, p, Advice(Proposal(50, "llm: more"), "llm", None, narrow))
    assert (more.target, [g.name for g in more.guardrails]) == (8, ["llm_direction"])


def test_a_scale_in_with_missing_data_never_becomes_a_scale_up():
    """on_missing: fixed 2 scales in blind (the user asked); the LLM's envelope is then the plan's,
    which is open upwards, but an advice may only keep what the fallback removes."""
    text = CONFIG.format(extra="timeout: 5s").replace("consumer: C}", "consumer: C, on_missing: 'fixed 2'}")
    svc = parse_config(text + "    min_replicas: 0\n    scale_down_by: 5\n", Path("/tmp/d/docktor.yaml"), {}).services[0]
    state = ServiceState()
    for _ in range(3):
        state.note_reads([], [svc.sources[0].name])
    p = plan(svc, {}, 3, state, 1000.0)
    assert p.missing and p.proposal.target == 2 and p.envelope.hi > 3
    narrow = direction_envelope(svc, p, state, 1000.0, False)
    assert (narrow.lo, narrow.hi) == (p.envelope.lo, p.envelope.hi)  # missing data: the plan's
    out = conclude(svc, p, Advice(Proposal(100, "llm"), "llm", None, narrow))
    assert (out.target, [g.name for g in out.guardrails]) == (3, ["deterministic_scale_down"])
    assert conclude(svc, p, Advice(Proposal(0, "llm"), "llm", None, narrow)).target == 2


def test_an_advice_goes_at_most_its_allowance_above_a_scale_up():
    """docktor's step limit allows x10 per check; the allowance, not the step, bounds an advice."""
    svc = service(policy="target", target_per_replica=100, rules=Rules(), scale_up_percent=900, max_replicas=100)
    p = make_plan(svc, backlog=800, current=4)  # the policy wants 8; the step allows 40
    narrow = direction_envelope(svc, p, ServiceState(), 1000.0, False)
    assert (narrow.lo, narrow.hi) == (4, 40)

    def advised(n: int, allowance: Allowance = DEFAULT_ALLOWANCE):
        return conclude(svc, p, Advice(Proposal(n, "llm"), "llm", None, narrow, allowance))

    wild = advised(1000)  # default: max(2, ceil(8 x 50 %)) = 4 above 8
    assert (wild.decision, wild.target) == ("scale_up", 12)
    assert [g.as_dict() for g in wild.guardrails] == [{"name": "llm_extra", "from": 1000, "to": 12}]
    assert wild.reason.endswith("limited to 12 by the LLM's allowance above the deterministic count (asked 1000)")
    assert (wild.envelope.lo, wild.envelope.hi, wild.envelope.lo_by, wild.envelope.hi_by) == (8, 12, "deterministic_scale_up", "llm_extra")
    assert advised(11).target == 11 and advised(11).guardrails == []
    assert advised(1000, Allowance(0, 0)).target == 8  # no allowance: the deterministic target exactly
    assert advised(1000, Allowance(10, 0)).target == 18
    assert advised(1000, Allowance(0, 1000)).target == 40  # the step limit still applies on top
    assert [g.name for g in advised(1000, Allowance(0, 1000)).guardrails] == ["step_limit"]
    assert advised(2).target == 8  # never short of the scale-up
    # the recommendation stabilization remembers is the policy's, whatever the advice
    assert wild.recommendation == 8


def test_when_the_deterministic_decision_holds_the_allowance_counts_from_current():
    svc = service(scale_up_by=6)
    quiet = make_plan(svc, backlog=50, current=4)  # no rule fired: the rules hold
    narrow = direction_envelope(svc, quiet, ServiceState(), 1000.0, True)  # may_act_without_rules
    assert (narrow.lo, narrow.hi) == (3, 10)
    up = conclude(svc, quiet, Advice(Proposal(10, "llm"), "llm", None, narrow))
    assert (up.target, [g.name for g in up.guardrails]) == (6, ["llm_extra"])  # 4 + max(2, ceil(2))
    # the user let the LLM act: scaling in stays possible where the deterministic decision holds
    assert conclude(svc, quiet, Advice(Proposal(0, "llm"), "llm", None, narrow)).target == 3


def test_an_advice_without_a_proposal_is_the_deterministic_decision_whatever_its_envelope():
    svc = service(max_replicas=10)
    p = make_plan(svc, backlog=500, current=3)  # the rules scale up to 5
    # an envelope that would hold 3 is not applied to the deterministic proposal: nothing was proposed
    declined = conclude(svc, p, Advice(None, "fallback", {"error": "timeout"}, Envelope(3, 3, "backoff", "backoff")))
    assert (declined.target, declined.source, declined.advice) == (5, "fallback", {"error": "timeout"})


def test_the_adversary_in_the_simulator_is_bounded_by_the_default_allowance():
    svc = service(policy="target", target_per_replica=100, rules=Rules(), scale_up_percent=900, max_replicas=100,
                  scale_down_percent=50, min_replicas=0)
    advise = adversarial_advisor()  # 10 x max_replicas, then 0
    up = make_plan(svc, backlog=800, current=4)
    high = conclude(svc, up, advise(svc, up, ServiceState(), 1000.0))
    assert (high.proposal, high.target, [g.name for g in high.guardrails]) == (1000, 12, ["llm_extra"])
    advise(svc, up, ServiceState(), 1000.0)  # its turn to say 0 passes on this plan
    down = make_plan(svc, backlog=700, current=8)
    low = conclude(svc, down, advise(svc, down, ServiceState(), 1000.0))
    assert (low.proposal, low.target, [g.name for g in low.guardrails]) == (1000, 8, ["llm_direction"])
    zero = conclude(svc, down, advise(svc, down, ServiceState(), 1000.0))
    assert (zero.proposal, zero.target, [g.name for g in zero.guardrails]) == (0, 7, ["deterministic_scale_down"])


def test_allowance_rounds_up_and_never_overflows():
    assert DEFAULT_ALLOWANCE == Allowance(2, 50.0) == Allowance.of(LLMConfig())
    assert [DEFAULT_ALLOWANCE.above(n) for n in (0, 1, 4, 5, 7, 40)] == [2, 2, 2, 3, 4, 20]
    assert Allowance(0, 10).above(11) == 2  # 1.1 rounds up
    assert Allowance(0, 1e300).above(10**6) > 10**9  # a huge percentage is "no allowance limit", not an overflow
    assert Allowance.of(LLMConfig(max_extra_replicas=7, max_extra_percent=0)) == Allowance(7, 0.0)


def test_llm_allowance_fields_are_read_from_the_llm_block():
    cfg = parse_config(CONFIG.format(extra="max_extra_replicas: 5, max_extra_percent: 20"), Path("/tmp/d/docktor.yaml"), {})
    assert (cfg.llm.max_extra_replicas, cfg.llm.max_extra_percent) == (5, 20.0)
    cfg = parse_config(CONFIG.format(extra="timeout: 5s"), Path("/tmp/d/docktor.yaml"), {})
    assert (cfg.llm.max_extra_replicas, cfg.llm.max_extra_percent) == (2, 50.0)


@pytest.mark.parametrize("extra, field", [
    ("max_extra_percent: -1", "llm.max_extra_percent"),
    ("max_extra_percent: .inf", "llm.max_extra_percent"),
    ("max_extra_replicas: -2", "llm.max_extra_replicas"),
    ("max_extra_replicas: 1.5", "llm.max_extra_replicas"),
])
def test_bad_llm_allowance_is_one_error_naming_the_field(extra, field):
    with pytest.raises(UsageError) as e:
        parse_config(CONFIG.format(extra=extra), Path("/tmp/d/docktor.yaml"), {})
    (problem,) = e.value.problems
    assert str(problem).startswith(f"{field}: "), str(problem)


def test_validate_refuses_a_negative_allowance_with_exit_2(tmp_path):
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(CONFIG.format(extra="max_extra_percent: -5"))
    r = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "validate", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: llm.max_extra_percent: ") and "Traceback" not in r.stderr
    assert r.stdout == ""
