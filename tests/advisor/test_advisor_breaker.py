"""The advisor's circuit breaker, against a scripted OpenAI-protocol server (it fails on demand).

After a failed call the service's LLM is not asked again until a back-off has passed; meanwhile
decisions are the deterministic ones with ``llm.asked`` false and ``llm.why`` naming the breaker.
A successful call closes it. Time is the advisor's ``now`` argument, so no test waits for a
back-off.
"""

from __future__ import annotations

import pytest

from docktor.agent.advisor.advisor import Advisor
from docktor.agent.advisor.gate import breaker_backoff
from docktor.agent.core.decide import finish
from docktor.agent.core.state import ServiceState
from tests.support.advisor_plans import StaticTools, llm_config, make_plan, service
from tests.support.scripted_openai_server import HANG, ScriptedOpenAIServer, answer, completion, error

INTERVAL = 10.0
#: a sizing policy under the helper's scale-up rule: at 500 queued and 2 running it holds at 2 and
#: the advice has room (2..4), so every tick wants to ask. (Under the rules policy a scale-up is
#: its step limit: no answer could change it, and none is asked.)
SVC = service(check_interval=INTERVAL, policy="target", target_per_replica=250)


async def tick(advisor: Advisor, now: float, backlog: float = 500.0, current: int = 2):
    """One decision as the daemon makes it: a scale-up rule fires, so every tick wants to ask."""
    p = make_plan(SVC, backlog, current, now=now)
    advice = await advisor.advise(SVC, p, ServiceState(), StaticTools(), now)
    decision = finish(SVC, p, advice.proposal or p.proposal, advice.source, envelope=advice.envelope)
    return advice, decision, p


def test_backoff_doubles_per_consecutive_failure_and_is_capped_by_the_heartbeat():
    assert [breaker_backoff(n, 10, 300) for n in (1, 2, 3, 4, 5, 6)] == [20, 40, 80, 160, 300, 300]
    assert breaker_backoff(1000, 10, 300) == 300  # no overflow after a long outage


async def test_scripted_server_http_500_opens_the_breaker_and_a_success_closes_it():
    boom = error(500, "boom")
    # each failed call is 3 requests (first try + 2 retries); the last reply repeats
    script = [boom] * 3 + [answer("scale_up", 4, 0.9)] + [boom] * 6 + [answer("scale_up", 3, 0.6)]
    async with ScriptedOpenAIServer(script) as s:
        advisor = Advisor(llm_config(s.base_url, heartbeat=300), env={})
        try:
            failed, d1, p1 = await tick(advisor, 1000.0)
            assert failed.source == "fallback" and failed.record["error"].startswith("HTTP 500")
            assert failed.record["breaker"]["failures"] == 1 and failed.record["proposal"] is None
            assert d1.target == p1.proposal.target  # the deterministic decision stands
            sent = len(s.requests)
            assert sent == 3

            # next tick: the rule still fires, but the breaker holds the call back
            held, d2, p2 = await tick(advisor, 1000.0 + INTERVAL)
            assert len(s.requests) == sent  # nothing was sent
            assert held.source == "policy" and held.proposal is None and held.envelope is None
            assert held.record["asked"] is False
            why = held.record["why"]
            assert why.startswith("circuit breaker open after 1 failed call (last: HTTP 500")
            assert "not asking until " in why and "scale-up rule fired" in why
            assert held.record["breaker"]["until"].endswith("Z")
            assert d2.target == p2.proposal.target and p2.envelope.lo <= d2.target <= p2.envelope.hi

            # two intervals after the failure: asked again, the server has recovered, breaker closed
            ok, d3, _ = await tick(advisor, 1000.0 + 2 * INTERVAL)
            assert ok.source == "llm" and ok.record["asked"] is True and ok.record["error"] is None
            assert ok.record["breaker_closed_after"] == 1 and "breaker" not in ok.record
            assert d3.target == 4 and len(s.requests) == sent + 1

            # closed means closed: the very next tick asks (and fails), then the back-off doubles
            t = 1000.0 + 3 * INTERVAL
            again, _, _ = await tick(advisor, t)
            assert again.record["asked"] is True and again.source == "fallback"
            assert again.record["breaker"]["failures"] == 1  # the count restarted after the success
            assert (await tick(advisor, t + INTERVAL))[0].record["asked"] is False
            second, _, _ = await tick(advisor, t + 2 * INTERVAL)
            assert second.source == "fallback" and second.record["breaker"]["failures"] == 2
            # 2 failures: 4 intervals without calls, counted from the second failure
            t2 = t + 2 * INTERVAL
            asked = [(await tick(advisor, t2 + k * INTERVAL))[0].record["asked"] for k in (1, 2, 3, 4)]
            assert asked == [False, False, False, True]
            assert len(s.requests) == sent + 1 + 3 + 3 + 1
        finally:
            await advisor.close()


@pytest.mark.parametrize(
    "script, timeout, error_start",
    [
        ([HANG], 0.3, "timeout"),
        ([completion("four, I think"), completion("{nope")], 3.0, "InvalidAnswer: invalid answer after repair"),
    ],
    ids=["timeout", "invalid-after-repair"],
)
async def test_scripted_server_other_failures_open_the_breaker_too(script, timeout, error_start):
    async with ScriptedOpenAIServer(script) as s:
        advisor = Advisor(llm_config(s.base_url, timeout=timeout), env={})
        try:
            failed, _, _ = await tick(advisor, 1000.0)
            sent = len(s.requests)
            held, decision, p = await tick(advisor, 1000.0 + INTERVAL)
        finally:
            await advisor.close()
    assert failed.source == "fallback" and failed.record["error"].startswith(error_start), failed.record
    assert held.record["asked"] is False and "circuit breaker open" in held.record["why"]
    assert len(s.requests) == sent
    assert decision.target == p.proposal.target


async def test_scripted_server_breaker_is_per_service():
    other = service(name="billing", check_interval=INTERVAL, policy="target", target_per_replica=250)
    async with ScriptedOpenAIServer([error(500, "boom")] * 3 + [answer("scale_up", 4)]) as s:
        advisor = Advisor(llm_config(s.base_url), env={})
        try:
            failed, _, _ = await tick(advisor, 1000.0)
            p = make_plan(other, 500, 2, now=1000.0 + INTERVAL)
            advice = await advisor.advise(other, p, ServiceState(), StaticTools(), 1000.0 + INTERVAL)
        finally:
            await advisor.close()
    assert failed.source == "fallback"
    # the worker's failure does not keep billing from asking
    assert advice.record["asked"] is True and advice.source == "llm" and advice.record["proposal"] == 4
