"""The LLM advisor beside the real daemon loop: real nats-server, local executor, decision log on disk.

A tick never waits for the model: the deterministic decision acts at once, the call runs beside
the loop (one per service), and its answer is applied at the tick it lands in, as a decision of
its own. The LLM is a real llama.cpp server (xllamacpp, in-process) serving the tiny test model,
reached at Docker Model Runner's path with ``provider: dmr`` and at plain ``/v1`` with
``provider: openai-compatible`` and an API key from the environment. The model's text is
gibberish, so the assertions are on the structure of what the daemon logged. A scripted server
(named as such) stands in for what a real peer can't do on demand: hang, or answer after exactly
20 s.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.core.decide import decide
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.advised_configs import config_yaml, service_yaml
from tests.support.clocks import FakeClock
from tests.support.daemons import records
from tests.support.jetstream import make_stream
from tests.support.peers import DMR_PREFIX, NatsServer, start_llama
from tests.support.scripted_openai_server import HANG, ScriptedOpenAIServer, Slow, answer
from tests.support.waiting import eventually

KEY_ENV = "DOCKTOR_TEST_LLM_KEY"
SECRET = "sk-docktor-test-3f9c1e7a52"
#: messages published: the scale-up rule fires above 50, and the target policy (40 per replica)
#: wants 3 (tests/support/advised_configs.py)
BACKLOG = 120


# --------------------------------------------------------------------------- peers and config


@pytest.fixture(scope="module", params=["", DMR_PREFIX], ids=["v1-openai-compatible-key", "dmr-path"])
def llama(request) -> Iterator[tuple[str, str]]:
    """(prefix, base_url); the plain /v1 server demands the API key, as a hosted endpoint would."""
    server, base_url = start_llama(request.param, api_key=None if request.param else SECRET)
    try:
        yield request.param, base_url
    finally:
        del server


def assert_inside_envelope(rec: dict[str, Any]) -> None:
    env = rec["envelope"]
    assert env["lo"] <= rec["target_replicas"] <= env["hi"], rec
    llm = rec["llm"]
    if rec["source"] == "llm":
        # the LLM's own (direction-narrowed) envelope, recorded in its record, holds too; the
        # decision's is the same, or narrower: never below a deterministic scale-up or scale-in,
        # never more than the allowance above the deterministic target
        lo, hi = llm["envelope"]
        assert lo <= env["lo"] <= rec["target_replicas"] <= env["hi"] <= hi, rec
        assert env["lo"] == lo or env["lo_by"] in ("deterministic_scale_up", "deterministic_scale_down"), rec
        assert env["hi"] == hi or env["hi_by"] in ("llm_extra", "deterministic_scale_down"), rec


def deterministic_target(daemon: Supervisor, rec: dict[str, Any], now: float) -> int:
    """What rules + guardrails alone decide for the logged observations (first tick: empty state)."""
    svc = daemon.config.service(rec["service"])
    return decide(svc, rec["observations"], rec["current_replicas"], ServiceState(), now).target


# --------------------------------------------------------------------------- against llama.cpp


@pytest.mark.llm
async def test_real_llama_scale_up_acts_at_once_and_the_answer_lands_as_its_own_decision(
    llama: tuple[str, str], nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, base_url = llama
    if prefix == DMR_PREFIX:
        llm = {"provider": "dmr", "base_url": base_url}
    else:
        llm = {"provider": "openai-compatible", "base_url": base_url, "model": "ai/llama3.2", "api_key_env": KEY_ENV}
        monkeypatch.setenv(KEY_ENV, SECRET)
        # the server really demands the key, so an answer from it means the key went out
        request = urllib.request.Request(
            base_url + "/chat/completions", data=b'{"messages":[]}', headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    # all four tools against a 2,048-token context: the advisor fits its prompt (it no longer gets HTTP 400)
    llm.update(timeout="60s", max_tokens=200, max_tool_rounds=1)
    await make_stream(nats_server.url, BACKLOG)
    log_path = tmp_path / "decisions.jsonl"
    cfg = parse_config(config_yaml(tmp_path, llm, service_yaml("worker", nats_server.url, interval=1)), tmp_path / "docktor.yaml")
    daemon = Supervisor(cfg, log_path=log_path)
    await daemon.open()
    try:
        runner = daemon.loops["worker"]
        first = await runner.tick()
        asked_while_acting = daemon.beside.calls.get("worker")
        await eventually("the LLM's answer", lambda: not daemon.beside.in_flight("worker"), timeout=90)
        await runner.tick()  # the answer lands here
    finally:
        await daemon.close()

    assert asked_while_acting is not None  # the call was started by the tick that scaled up
    acted, landed = records(log_path)
    # 1. the deterministic scale-up, executed at once, with the call in flight beside it
    assert acted["ts"] == first.ts and acted["source"] == "policy" and acted["decision"] == "scale_up"
    assert acted["executed"] is True and acted["outcome"]["status"] == "ok"
    assert acted["target_replicas"] == deterministic_target(daemon, acted, 0.0)
    assert acted["llm"]["asked"] is True and acted["llm"]["in_flight"]["age_s"] == 0.0
    assert acted["llm"]["why"].startswith("scale-up rule fired: queue.backlog")
    # 2. the answer, applied at the next tick as its own decision
    llm_rec = landed["llm"]
    assert landed["source"] in ("llm", "fallback"), landed
    assert llm_rec["provider"] == ("dmr" if prefix else "openai-compatible") and llm_rec["model"] == "ai/llama3.2"
    assert llm_rec["landed"]["asked_at"] == acted["llm"]["in_flight"]["asked_at"]
    assert isinstance(llm_rec["latency_ms"], float) and llm_rec["latency_ms"] > 0
    assert isinstance(llm_rec["prompt_tokens"], int) and isinstance(llm_rec["completion_tokens"], int)
    budget = llm_rec["prompt"]
    assert budget["n_ctx"] == 2048 and budget["how"] == "counted" and budget["tokens"] <= 2048 - 200
    if landed["source"] == "llm":
        assert llm_rec["error"] is None and llm_rec["prompt_tokens"] > 0 and llm_rec["completion_tokens"] > 0
        assert isinstance(llm_rec["proposal"], int) and llm_rec["proposal"] == landed["proposal"]
        assert 0 <= llm_rec["confidence"] <= 1
        assert_inside_envelope(landed)
    else:
        # a real failure (a timeout on a busy machine), never a rejected key, never the context
        assert llm_rec["error"] and "401" not in llm_rec["error"] and "context" not in llm_rec["error"], llm_rec
    assert landed["current_replicas"] == acted["target_replicas"]
    assert landed["target_replicas"] >= landed["current_replicas"]  # the rule still fires: never down
    assert SECRET not in log_path.read_text()


# --------------------------------------------------------------------------- a slow or hanging endpoint


async def test_scripted_server_hanging_llm_never_holds_a_tick_and_the_breaker_holds_off(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_stream(nats_server.url, BACKLOG)
    monkeypatch.setenv(KEY_ENV, SECRET)
    log_path = tmp_path / "decisions.jsonl"
    clock = FakeClock(1000.0)
    async with ScriptedOpenAIServer([HANG]) as s:
        llm = {"provider": "openai-compatible", "base_url": s.base_url, "model": "scripted-model",
               "api_key_env": KEY_ENV, "timeout": "0.5s", "max_tool_rounds": 0}
        # room to grow on every tick (at max_replicas the envelope is one count and nobody asks)
        svc = service_yaml("worker", nats_server.url, interval=10, max_r=10)
        cfg = parse_config(config_yaml(tmp_path, llm, svc), tmp_path / "docktor.yaml")
        daemon = Supervisor(cfg, log_path=log_path, mono=clock)
        await daemon.open()
        try:
            runner = daemon.loops["worker"]
            hung = await runner.tick()  # does not wait: the call hangs beside the loop
            await eventually("the advisor's own timeout", lambda: not daemon.beside.in_flight("worker"), timeout=90)
            sent = len(s.requests)
            clock.advance(2)  # the timeout lands at the next tick: a fallback
            await runner.tick()
            clock.advance(8)  # the rule still fires; the breaker (two intervals) holds the call back
            await runner.tick()
            held_sent = len(s.requests)
            clock.advance(20)  # past the back-off: asked again (it hangs again, beside the loop)
            await runner.tick()
            await eventually("the probe call sent", lambda: len(s.requests) == sent + 1, timeout=90)
        finally:
            await daemon.close()
    assert s.headers[0]["authorization"] == f"Bearer {SECRET}"  # the key went out, in the header only

    first, fallback, held, again = records(log_path)
    assert first["ts"] == hung.ts
    # the deterministic decision, clamped by the guardrails, carried out without waiting: the
    # record holds no answer and no error, the timeout lands at the next tick
    assert first["source"] == "policy" and first["llm"]["asked"] is True and "in_flight" in first["llm"]
    assert "error" not in first["llm"] and "latency_ms" not in first["llm"]
    assert first["target_replicas"] == deterministic_target(daemon, first, 1000.0)
    assert first["target_replicas"] > first["current_replicas"] and first["executed"] is True
    assert sent == 1

    assert fallback["source"] == "fallback" and fallback["llm"]["error"] == "timeout"
    assert fallback["llm"]["breaker"]["failures"] == 1 and fallback["llm"]["proposal"] is None
    assert fallback["llm"]["landed"]["after_s"] == 2.0

    assert held["source"] == "policy" and held["llm"]["asked"] is False and held_sent == sent
    assert held["llm"]["why"].startswith("circuit breaker open after 1 failed call (last: timeout)")

    assert again["llm"]["asked"] is True and "in_flight" in again["llm"] and len(s.requests) == sent + 1
    for rec in (first, fallback, held, again):
        assert_inside_envelope(rec)
        assert rec["target_replicas"] >= rec["current_replicas"]  # a scale-up rule fired: never down
    assert SECRET not in log_path.read_text()


BURST = 120


async def test_scripted_20s_llm_burst_scales_up_as_fast_as_without_an_llm(nats_server: NatsServer, tmp_path: Path) -> None:
    """Same run, same burst: a daemon whose (scripted) LLM takes 20 s, and one without an LLM.

    The executed scale-up of both comes within one check interval of each other, and the LLM's
    call is still in flight when its daemon's scale-up has been executed.
    """
    interval = 1.0
    for stream in ("SLOW", "PLAIN"):
        await make_stream(nats_server.url, name=stream)
    async with ScriptedOpenAIServer([Slow(20.0, answer("scale_up", 4, 0.9, "slow model"))]) as s:
        llm = {"provider": "openai-compatible", "base_url": s.base_url, "model": "scripted-model",
               "timeout": "30s", "max_tool_rounds": 0}
        with_llm = Supervisor(parse_config(config_yaml(tmp_path / "a", llm, service_yaml("slow", nats_server.url, interval=interval)
                                                   .replace("stream: JOBS", "stream: SLOW")), tmp_path / "a" / "docktor.yaml"))
        plain = Supervisor(parse_config(config_yaml(tmp_path / "b", {"provider": "none"}, service_yaml("plain", nats_server.url, interval=interval)
                                                .replace("stream: JOBS", "stream: PLAIN")), tmp_path / "b" / "docktor.yaml"))
        scaled: dict[str, float] = {}
        in_flight_then: list[bool] = []

        def hook(daemon: Supervisor) -> Any:
            def on_record(rec: Any) -> None:
                if rec.executed and rec.decision == "scale_up" and rec.current_replicas >= 1 and rec.service not in scaled:
                    scaled[rec.service] = asyncio.get_running_loop().time()
                    if daemon is with_llm:
                        in_flight_then.append(with_llm.beside.in_flight("slow"))
            return on_record

        stop = asyncio.Event()
        for d in (with_llm, plain):
            d.on_record.append(hook(d))
            await d.open()
        tasks = [asyncio.create_task(d.run(stop)) for d in (with_llm, plain)]
        try:
            # both at min_replicas, nothing asked yet (a one-count envelope is not worth a call)
            await eventually("both at 1 replica", lambda: all(r.last_status is not None and r.last_status.desired == 1
                                                              for d in (with_llm, plain) for r in d.loops.values()), timeout=90)
            assert not s.requests
            import nats

            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            for _ in range(BURST):  # the burst, interleaved on both queues
                await js.publish("slow.work", b"x")
                await js.publish("plain.work", b"x")
            await nc.close()
            burst_at = asyncio.get_running_loop().time()
            await eventually("both scale-ups executed", lambda: len(scaled) == 2, timeout=30)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for d in (with_llm, plain):
                await d.close()
    delay = {name: t - burst_at for name, t in scaled.items()}
    assert abs(delay["slow"] - delay["plain"]) <= interval, delay
    assert delay["slow"] < 20.0 and in_flight_then == [True], (delay, in_flight_then)
    assert len(s.requests) == 1  # asked once (the burst), still thinking when the scale-up was done


async def test_scripted_slow_answer_lands_at_a_later_tick_inside_that_ticks_envelope(nats_server: NatsServer, tmp_path: Path) -> None:
    """The model proposes 100 after 1 s; the tick it lands in clamps it (the allowance) and records it as its own decision."""
    await make_stream(nats_server.url, BACKLOG)
    log_path = tmp_path / "decisions.jsonl"
    async with ScriptedOpenAIServer([Slow(1.0, answer("scale_up", 100, 0.9, "way more"))]) as s:
        llm = {"provider": "openai-compatible", "base_url": s.base_url, "model": "scripted-model",
               "timeout": "10s", "max_tool_rounds": 0}
        cfg = parse_config(config_yaml(tmp_path, llm, service_yaml("worker", nats_server.url, interval=0.3, max_r=10)),
                           tmp_path / "docktor.yaml")
        daemon = Supervisor(cfg, log_path=log_path)
        stop = asyncio.Event()
        await daemon.open()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await eventually("the answer applied", lambda: any(r.get("source") == "llm" for r in daemon.loops["worker"].recent), timeout=90)
        finally:
            stop.set()
            await task
            await daemon.close()
    logged = records(log_path)
    i = next(i for i, r in enumerate(logged) if r["source"] == "llm")
    asking, waiting, landed = logged[0], logged[1:i], logged[i]
    assert asking["llm"]["asked"] is True and asking["executed"] is True and asking["source"] == "policy"
    assert waiting and all(r["llm"]["in_flight"]["asked_at"] == asking["llm"]["in_flight"]["asked_at"] for r in waiting)
    assert landed["llm"]["proposal"] == 100 and landed["llm"]["latency_ms"] >= 1000
    assert landed["llm"]["landed"]["asked_at"] == asking["llm"]["in_flight"]["asked_at"]
    # clamped into the envelope of the tick it landed in: that tick holds at the 3 the policy
    # wants, and the allowance is max(2, 50 % of 3) above it, not 100
    assert landed["current_replicas"] == 3 and landed["decision"] == "scale_up"
    assert landed["target_replicas"] == 5 and landed["guardrails"][0]["name"] == "llm_extra"
    assert landed["guardrails"] and landed["guardrails"][0]["from"] == 100
    assert_inside_envelope(landed)
    # one call in flight at a time: the ticks in between asked nothing
    assert all(r["llm"]["asked"] is False for r in waiting) and s.requests
