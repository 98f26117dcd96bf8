"""The advisor against a real llama.cpp server (xllamacpp, in-process, loopback HTTP).

The model (../shared/llm-peer/tiny-hermes.gguf) is tiny and its text is gibberish, so these
tests assert on structure only: a tool call went out and came back, the answer passed schema
validation, tokens and latency were recorded, and the executed target is inside the envelope.
Served at the plain ``/v1`` path and at Docker Model Runner's ``/engines/llama.cpp/v1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docktor.agent.advisor.advisor import Advisor
from docktor.agent.config.model import LLMConfig
from docktor.agent.core.decide import finish
from docktor.agent.core.state import ServiceState
from tests.support.advisor_plans import StaticTools, make_plan, service
from tests.support.peers import DMR_PREFIX, start_llama

pytestmark = pytest.mark.llm

#: The tiny model's byte-level tokenizer spends about one token per character and its context is
#: 2048 tokens, so the real-peer tests offer two of the four tools (a real model's tokenizer packs
#: the full prompt in ~4x fewer tokens; the scripted tests cover all four tools).
TOOLS = ["get_queue_metrics", "get_metric_history"]


@pytest.fixture(scope="module", params=["", DMR_PREFIX], ids=["v1", "dmr-path"])
def llama(request) -> Iterator[tuple[str, str]]:
    server, base_url = start_llama(request.param)
    try:
        yield request.param, base_url
    finally:
        del server  # stops serving


def llm_config(prefix: str, base_url: str, **overrides) -> LLMConfig:
    values = dict(timeout=20.0, max_tokens=200, max_tool_rounds=1, tools=TOOLS)
    if prefix == DMR_PREFIX:
        # Docker Model Runner's layout, reached through the dmr provider's own naming
        values.update(provider="dmr", base_url=base_url)
    else:
        values.update(provider="openai-compatible", base_url=base_url, model="ai/llama3.2")
    values.update(overrides)
    return LLMConfig(**values)


async def test_real_llama_full_decision_with_tool_round_trip(llama):
    prefix, base_url = llama
    # a sizing policy under the scale-up rule: it holds at 2 (900 / 450) and the answer has room
    # (2..4); under the rules policy the scale-up is its step limit and no model is asked
    svc = service(policy="target", target_per_replica=450)
    state = ServiceState()
    p = make_plan(svc, backlog=900, current=2, state=state)
    tools = StaticTools()
    advisor = Advisor(llm_config(prefix, base_url), env={})
    try:
        advice = await advisor.advise(svc, p, state, tools, 1000.0)
    finally:
        await advisor.close()
    rec = advice.record
    assert rec is not None and rec["error"] is None, rec
    assert advice.source == "llm" and rec["asked"] is True and rec["why"].startswith("scale-up rule fired")
    assert rec["provider"] == ("dmr" if prefix else "openai-compatible") and rec["model"] == "ai/llama3.2"
    # one tool round-trip: the model called an offered tool, Docktor answered it
    assert len(rec["tool_calls"]) >= 1 and all(c["name"] in TOOLS for c in rec["tool_calls"])
    assert any(name in ("queue_metrics", "metric_history") for name, _ in tools.calls)
    # a schema-valid answer: integer target, confidence in [0, 1], action one of three
    assert isinstance(rec["proposal"], int) and rec["proposal"] >= 0
    assert 0 <= rec["confidence"] <= 1 and rec["action"] in ("scale_up", "scale_down", "hold")
    assert rec["format"] == "json_schema"
    # tokens and latency recorded
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0 and rec["latency_ms"] > 0
    assert rec["requests"] >= 2
    # the log line is JSON as is, and the executed target is inside the LLM's envelope
    json.dumps(rec)
    decision = finish(svc, p, advice.proposal or p.proposal, advice.source, envelope=advice.envelope)
    assert advice.envelope is not None and advice.envelope.lo <= decision.target <= advice.envelope.hi
    assert p.envelope.lo <= decision.target <= p.envelope.hi


async def test_real_llama_without_tools_answers_with_schema(llama):
    prefix, base_url = llama
    svc = service()
    p = make_plan(svc, backlog=2, current=3)  # scale-down rules hold
    advisor = Advisor(llm_config(prefix, base_url, max_tool_rounds=0), env={})
    try:
        advice = await advisor.advise(svc, p, ServiceState(), StaticTools(), 1000.0)
    finally:
        await advisor.close()
    assert advice.source == "llm", advice.record
    assert advice.record["tool_calls"] == [] and advice.record["requests"] in (1, 2)
    decision = finish(svc, p, advice.proposal or p.proposal, advice.source, envelope=advice.envelope)
    assert decision.target <= 3  # never up when only the scale-down rules hold


async def test_real_llama_prompt_with_all_four_tools_is_fitted_to_a_2048_token_context(llama):
    """The issue's HTTP 400: all four tools and history made 2,266 tokens. The advisor reads n_ctx
    from /props, counts with /apply-template + /tokenize and drops what does not fit."""
    prefix, base_url = llama
    svc = service(policy="target", target_per_replica=450)  # holds at 2 with room to answer in
    state = ServiceState()
    for t in range(5):  # history to drop
        state.history.append((990.0 + t, {"queue.backlog": 900.0 + t, "queue.rate_in": 20.0, "replicas.running": 2.0}))
    p = make_plan(svc, backlog=900, current=2, state=state)
    advisor = Advisor(llm_config(prefix, base_url, tools=None, max_tool_rounds=2, max_tokens=200), env={})
    try:
        advice = await advisor.advise(svc, p, state, StaticTools(), 1000.0)
        info = await advisor.server_info()
    finally:
        await advisor.close()
    rec = advice.record
    assert (info.kind, info.n_ctx, info.tools, info.tokenizer) == ("llama.cpp", 2048, True, True)
    budget = rec["prompt"]
    assert budget["how"] == "counted" and budget["n_ctx"] == 2048 and budget["variant"] != "full", budget
    assert budget["tokens"] <= 2048 - 200 - 32
    # the first request fits: no context error, whatever the tiny model then says
    assert "context" not in str(rec.get("error")) and "context_retry" not in rec, rec
    assert rec["prompt_tokens"] > 0 and rec["requests"] >= 1


def test_real_llama_llm_check_reports_support(llama, tmp_path: Path):
    prefix, base_url = llama
    import typer

    from docktor.agent.cli.llm import register

    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(
        "llm:\n"
        f"  provider: {'dmr' if prefix else 'openai-compatible'}\n"
        f"  base_url: {base_url}\n"
        "  model: ai/llama3.2\n"
        "  max_tokens: 200\n"
        "services:\n"
        "  - name: worker\n"
        "    command: python worker.py\n"
        "    policy: rules\n"
    )
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # a group, as in the real CLI
        pass

    result = CliRunner().invoke(app, ["llm", "check", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "model ai/llama3.2: available" in result.output
    assert "structured output: json_schema ok" in result.output
    assert "tool calling: ok, called" in result.output
    assert "server: llama.cpp: context 2048 tokens, tools supported (llama.cpp /props)" in result.output
    assert "tokens (counted); context 2048 - max_tokens 200 leaves 1816" in result.output


def test_llm_check_bad_input_is_one_line_and_exit_2(tmp_path: Path):
    import typer

    from docktor.agent.cli.llm import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        pass

    cfg = tmp_path / "docktor.yaml"
    cfg.write_text("llm:\n  provider: openai-compatible\nservices:\n  - name: w\n    command: x\n    policy: rules\n    queue: {kind: nats, stream: S, consumer: C}\n")
    result = CliRunner().invoke(app, ["llm", "check", "--config", str(cfg)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: llm.base_url: required for provider 'openai-compatible'",
        "error: llm.model: required for provider 'openai-compatible'",
    ]
    missing = CliRunner().invoke(app, ["llm", "check", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ") and len(missing.stderr.strip().splitlines()) == 1
