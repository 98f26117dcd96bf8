"""The LLM advisor inside the real daemon loop: real nats-server, local executor, decision log on disk.

The LLM is a real llama.cpp server (xllamacpp, in-process) serving the tiny test model, reached
at Docker Model Runner's path with ``provider: dmr`` and at plain ``/v1`` with
``provider: openai-compatible`` and an API key from the environment. The model's text is
gibberish, so the assertions are on the structure of what the daemon logged: where the decision
came from, what the ``llm`` record holds, that the executed target lies inside the envelope
recorded on the same line, and that the key appears nowhere in the log. A scripted server (named
as such) stands in for what a real peer can't do on demand: hang.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.core.decide import decide
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.decision_log import read_records
from docktor.agent.runtime.loop import Daemon
from tests.peers import DMR_PREFIX, NatsServer, start_llama
from tests.scripted_openai_server import HANG, ScriptedOpenAIServer
from tests.test_advisor_llama import TOOLS

KEY_ENV = "DOCKTOR_TEST_LLM_KEY"
SECRET = "sk-docktor-test-3f9c1e7a52"
BACKLOG = 120  # messages published; the scale-up rule fires above 50
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


# --------------------------------------------------------------------------- peers and config


@pytest.fixture(scope="module", params=["", DMR_PREFIX], ids=["v1-openai-compatible-key", "dmr-path"])
def llama(request) -> Iterator[tuple[str, str]]:
    """(prefix, base_url); the plain /v1 server demands the API key, as a hosted endpoint would."""
    server, base_url = start_llama(request.param, api_key=None if request.param else SECRET)
    try:
        yield request.param, base_url
    finally:
        del server


async def publish_backlog(url: str, n: int, stream: str = "JOBS") -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
        await js.add_consumer(stream, ConsumerConfig(durable_name="WORKERS"))
        for i in range(n):
            await js.publish(f"{stream.lower()}.work", f"job {i}".encode())
    finally:
        await nc.close()


def service_yaml(name: str, nats_url: str, *, interval: float, min_r: int = 1, max_r: int = 4) -> str:
    return f"""
  - name: {name}
    executor: local
    command: {json.dumps(SLEEPER)}
    stop_grace_period: 1s
    min_replicas: {min_r}
    max_replicas: {max_r}
    scale_up_by: 2
    check_interval: {interval}
    policy: rules
    cooldown_up: 0
    cooldown_down: 0
    scale_down_stabilization: 0
    queue: {{kind: nats, url: "{nats_url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 50}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 5}}]
"""


def config_yaml(tmp_path: Path, llm: dict[str, Any], services: str) -> str:
    # the llm block as a JSON flow mapping: YAML reads it as is
    return f"state_dir: {tmp_path}\nmode: autonomous\nllm: {json.dumps(llm)}\nservices:{services}"


def log_records(path: Path) -> list[dict[str, Any]]:
    """One dict per decision (an acting decision's intent and outcome lines merged)."""
    return list(read_records(path))


def assert_inside_envelope(rec: dict[str, Any]) -> None:
    env = rec["envelope"]
    assert env["lo"] <= rec["target_replicas"] <= env["hi"], rec
    llm = rec["llm"]
    if rec["source"] == "llm":
        # the LLM's own (direction-narrowed) envelope, recorded in its record, holds too
        lo, hi = llm["envelope"]
        assert (env["lo"], env["hi"]) == (lo, hi) and lo <= rec["target_replicas"] <= hi


def deterministic_target(daemon: Daemon, rec: dict[str, Any], now: float) -> int:
    """What rules + guardrails alone decide for the logged observations (first tick: empty state)."""
    svc = daemon.config.service(rec["service"])
    return decide(svc, rec["observations"], rec["current_replicas"], ServiceState(), now).target


# --------------------------------------------------------------------------- against llama.cpp


@pytest.mark.llm
async def test_real_llama_daemon_ticks_log_bounded_llm_decisions_without_the_key(
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
    llm.update(timeout="60s", max_tokens=200, max_tool_rounds=1, tools=TOOLS)
    await publish_backlog(nats_server.url, BACKLOG)
    log_path = tmp_path / "decisions.jsonl"
    cfg = parse_config(config_yaml(tmp_path, llm, service_yaml("worker", nats_server.url, interval=1)), tmp_path / "docktor.yaml")
    daemon = Daemon(cfg, log_path=log_path)
    await daemon.open()
    try:
        runner = daemon.runners["worker"]
        await daemon.tick(runner)
        await daemon.tick(runner)  # the rule still fires: asked again, with the first decision in its prompt
    finally:
        await daemon.close()

    records = log_records(log_path)
    assert len(records) == 2
    for rec in records:
        assert rec["service"] == "worker" and rec["matched_rules"], rec
        assert rec["observations"]["queue.backlog"] == BACKLOG
        assert rec["source"] in ("llm", "fallback"), rec
        llm_rec = rec["llm"]
        assert llm_rec["provider"] == ("dmr" if prefix else "openai-compatible") and llm_rec["model"] == "ai/llama3.2"
        assert llm_rec["asked"] is True and llm_rec["why"].startswith("scale-up rule fired: queue.backlog")
        assert isinstance(llm_rec["latency_ms"], float) and llm_rec["latency_ms"] > 0
        assert isinstance(llm_rec["prompt_tokens"], int) and isinstance(llm_rec["completion_tokens"], int)
        assert isinstance(llm_rec["tool_calls"], list)
        assert "proposal" in llm_rec and "confidence" in llm_rec
        if rec["source"] == "llm":
            assert llm_rec["error"] is None and llm_rec["prompt_tokens"] > 0 and llm_rec["completion_tokens"] > 0
            assert llm_rec["tool_calls"] and all(c["name"] in TOOLS for c in llm_rec["tool_calls"])  # one tool round
            assert isinstance(llm_rec["proposal"], int) and llm_rec["proposal"] == rec["proposal"]
            assert 0 <= llm_rec["confidence"] <= 1
        else:
            # a real failure (context, timeout on a busy machine), never a rejected key
            assert llm_rec["error"] and "401" not in llm_rec["error"], llm_rec
            assert llm_rec["proposal"] is None and llm_rec["breaker"]["failures"] >= 1
        assert_inside_envelope(rec)
        # scale-up rule fired: never below the current count, whatever the model said
        assert rec["target_replicas"] >= rec["current_replicas"]
        if rec["target_replicas"] != rec["current_replicas"]:
            assert rec["executed"] is True and rec["outcome"]["status"] == "ok", rec
    # the first call fits the tiny model's 2048-token context; the second, with the first decision
    # in its prompt, may not (HTTP 400 -> fallback), so at least one line is the model's
    assert any(r["source"] == "llm" for r in records), [r["llm"] for r in records]
    first, second = records
    # what the first line says was executed is what the executor then reported
    assert second["current_replicas"] == first["target_replicas"]
    assert runner.last_status is not None and runner.last_status.desired == first["target_replicas"]
    assert SECRET not in log_path.read_text()


# --------------------------------------------------------------------------- a hanging endpoint


class Clock:
    """The daemon's monotonic clock, set by the test: back-offs pass without waiting for them."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_scripted_server_hanging_llm_tick_falls_back_inside_the_guardrails_then_the_breaker_holds_off(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_backlog(nats_server.url, BACKLOG)
    monkeypatch.setenv(KEY_ENV, SECRET)
    log_path = tmp_path / "decisions.jsonl"
    clock = Clock(1000.0)
    async with ScriptedOpenAIServer([HANG]) as s:
        llm = {"provider": "openai-compatible", "base_url": s.base_url, "model": "scripted-model",
               "api_key_env": KEY_ENV, "timeout": "0.5s", "max_tool_rounds": 0}
        # room to grow on every tick (at max_replicas the envelope is one count and nobody asks)
        svc = service_yaml("worker", nats_server.url, interval=10, max_r=10)
        cfg = parse_config(config_yaml(tmp_path, llm, svc), tmp_path / "docktor.yaml")
        daemon = Daemon(cfg, log_path=log_path, mono=clock)
        await daemon.open()
        try:
            runner = daemon.runners["worker"]
            hung = await daemon.tick(runner)  # returns: the advisor's own timeout ends the call
            sent = len(s.requests)
            clock.t += 10  # next tick: the rule still fires, the breaker holds the call back
            await daemon.tick(runner)
            held_sent = len(s.requests)
            clock.t += 10  # two intervals after the failure: asked again (and it hangs again)
            await daemon.tick(runner)
        finally:
            await daemon.close()
    assert s.headers[0]["authorization"] == f"Bearer {SECRET}"  # the key went out, in the header only

    first, second, third = log_records(log_path)
    assert first["ts"] == hung.ts
    assert first["source"] == "fallback" and first["llm"]["asked"] is True and first["llm"]["error"] == "timeout"
    assert first["llm"]["breaker"]["failures"] == 1 and first["llm"]["proposal"] is None
    # the deterministic decision, clamped by the guardrails, and carried out
    assert first["target_replicas"] == deterministic_target(daemon, first, 1000.0)
    assert first["target_replicas"] > first["current_replicas"] and first["executed"] is True
    assert sent == 1

    assert second["source"] == "rules" and second["llm"]["asked"] is False and held_sent == sent
    assert second["llm"]["why"].startswith("circuit breaker open after 1 failed call (last: timeout)")
    assert second["current_replicas"] == first["target_replicas"]

    assert third["source"] == "fallback" and third["llm"]["asked"] is True and third["llm"]["breaker"]["failures"] == 2, third
    assert len(s.requests) == sent + 1

    for rec in (first, second, third):
        assert_inside_envelope(rec)
        assert rec["target_replicas"] >= rec["current_replicas"]  # a scale-up rule fired: never down
    assert SECRET not in log_path.read_text()


async def test_scripted_server_hanging_llm_call_does_not_hold_up_another_services_ticks(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """One service waits on a hung LLM call; the other (a fixed size, so never asking) ticks on."""
    await publish_backlog(nats_server.url, BACKLOG)
    log_path = tmp_path / "decisions.jsonl"
    async with ScriptedOpenAIServer([HANG]) as s:
        llm = {"provider": "openai-compatible", "base_url": s.base_url, "model": "scripted-model",
               "timeout": "1.5s", "max_tool_rounds": 0}
        services = service_yaml("asking", nats_server.url, interval=30) + service_yaml(
            "fixed", nats_server.url, interval=0.2, min_r=1, max_r=1
        )
        cfg = parse_config(config_yaml(tmp_path, llm, services), tmp_path / "docktor.yaml")
        daemon = Daemon(cfg, log_path=log_path)
        order: list[str] = []
        daemon.on_record.append(lambda rec: order.append(rec.service))
        stop = asyncio.Event()
        await daemon.open()
        try:
            task = asyncio.create_task(daemon.run(stop))
            while "asking" not in order and not task.done():  # the hung call ends at its timeout
                await asyncio.sleep(0.05)
            stop.set()
            await task
        finally:
            await daemon.close()
    records = log_records(log_path)
    asking = [r for r in records if r["service"] == "asking"]
    fixed = [r for r in records if r["service"] == "fixed"]
    assert len(asking) == 1 and asking[0]["source"] == "fallback" and asking[0]["llm"]["error"] == "timeout"
    assert_inside_envelope(asking[0])
    assert asking[0]["target_replicas"] == deterministic_target(daemon, asking[0], 0.0)
    # while "asking" waited 1.5 s for its LLM, "fixed" (every 0.2 s) went on deciding
    assert order.index("asking") >= 3, order
    assert all(r["llm"]["asked"] is False and r["source"] == "rules" for r in fixed)
    assert all(r["target_replicas"] == 1 for r in fixed)
