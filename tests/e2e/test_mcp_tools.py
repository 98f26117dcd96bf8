"""``docktor mcp``'s tools through the MCP SDK's own client, over stdio and streamable HTTP, against a
real daemon: ``docktor daemon start --foreground`` with the local executor and a real nats-server,
both started here. The read-only tools and their schemas, a proposal clamped to the envelope, bad
input, ``apply_scale`` acting inside the envelope, the tools without a daemon, and the log's
secrets redacted. Replicas are counted from /proc, outside the daemon.

The HTTP listener and its bearer token: test_mcp_http.py.

Skipped only when the ``mcp`` package is absent (it is in requirements.lock, so never in CI)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp package is not installed (pip install -r requirements.lock)")

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support.mcp_daemon import *  # noqa: F403  (fixtures, found by name: nats, reader)
from tests.support.mcp_daemon import Daemon, connect, ok, replicas_running, text, write_config
from tests.support.peers import NatsServer
from tests.support.waiting import wait_until

READ_TOOLS = {
    # name: (argument -> JSON types, required)
    "list_services": ({}, []),
    "get_metrics": ({"service": ["string"]}, ["service"]),
    "get_metric_history": ({"service": ["string"], "metric": ["string"], "minutes": ["number"], "max_points": ["integer"]},
                           ["service", "metric"]),
    "get_recent_decisions": ({"service": ["null", "string"], "limit": ["integer"], "changes_only": ["boolean"]}, []),
    "explain_decision": ({"service": ["null", "string"], "decision_id": ["null", "string"], "count": ["integer"]}, []),
    "propose_scale": ({"service": ["string"], "n": ["integer"], "reason": ["string"]}, ["service", "n", "reason"]),
}


APPLY_TOOL = {"apply_scale": ({"service": ["string"], "n": ["integer"], "reason": ["string"]}, ["service", "n", "reason"])}


async def refused(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, text(result)
    message = text(result)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def types_of(prop: dict[str, Any]) -> list[str]:
    options = prop.get("anyOf") or [prop]
    return sorted(str(o.get("type")) for o in options)


async def check_schemas(client: Client, expected: dict[str, tuple[dict[str, list[str]], list[str]]]) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(expected)
    for name, (props, required) in expected.items():
        schema = tools[name].input_schema
        assert schema.get("type") == "object", name
        assert {k: types_of(v) for k, v in (schema.get("properties") or {}).items()} == props, name
        assert sorted(schema.get("required") or []) == sorted(required), name
        assert tools[name].description, name
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is (name != "apply_scale"), name


# --------------------------------------------------------------------------- read-only, apply off


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_read_only_tools_and_their_schemas(reader: Daemon, transport: str) -> None:
    async with connect(reader.config, transport) as client:
        await check_schemas(client, READ_TOOLS)  # apply_scale is not even listed

        listed = await ok(client, "list_services")
        assert listed["apply_scale"].startswith("off")
        assert listed["daemon"]["pid"] == reader.proc.pid and listed["daemon"]["mode"] == "autonomous"
        (worker,) = listed["services"]
        assert worker["name"] == "worker" and worker["policy"] == "target"
        assert worker["bounds"] == {"min": 1, "max": 5}
        assert worker["replicas"]["desired"] == 1 and worker["paused"] is None
        assert isinstance(worker["cooldowns_left_s"], dict) and worker["last_decision"]["decision"] == "hold"

        metrics = await ok(client, "get_metrics", service="worker")
        assert metrics["observations"]["queue.backlog"] == 0 and metrics["observations"]["replicas.running"] == 1
        assert metrics["age_s"] is not None and metrics["decision_id"]

        history = await ok(client, "get_metric_history", service="worker", metric="replicas.desired", minutes=5, max_points=3)
        assert history["count"] >= 1 and 1 <= history["returned"] <= 3 and history["stats"]["last"] == 1
        assert history["points"][-1][1] == 1 and all(value in (0, 1) for _, value in history["points"])  # 0 -> 1 at start

        decisions = await ok(client, "get_recent_decisions", service="worker", limit=2)
        assert 1 <= decisions["count"] <= 2
        assert all(d["service"] == "worker" and d["source"] == "policy" and d["id"] for d in decisions["decisions"])

        newest = decisions["decisions"][-1]["id"]
        explained = await ok(client, "explain_decision", decision_id=newest)
        assert explained["decision_ids"] == [newest]
        assert "worker  hold 1 -> 1" in explained["text"] and "observed" in explained["text"] and "guardrails" in explained["text"]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_proposal_outside_the_envelope_is_clamped_and_nothing_is_done(reader: Daemon, transport: str) -> None:
    before = len(reader.records())
    async with connect(reader.config, transport) as client:
        up = await ok(client, "propose_scale", service="worker", n=9, reason="load test at 10:00")
        assert (up["current_replicas"], up["asked"], up["would_execute"], up["decision"]) == (1, 9, 2, "scale_up")
        assert up["clamped_by"] == [{"guardrail": "step_limit", "from": 9, "to": 2}]  # scale_up_by: 1
        assert up["envelope"]["hi"] == 2 and up["envelope"]["hi_by"] == "step_limit"
        assert "limited to 2 by the step limit (asked 9)" in up["reason"]
        assert "mcp: load test at 10:00" in up["reason"]
        assert "proposed   9 by an MCP client" in up["explanation"]  # docktor explain's prose
        assert up["apply_scale"].startswith("off in this server")

        down = await ok(client, "propose_scale", service="worker", n=0, reason="quiet night")
        assert down["would_execute"] == 1 and down["clamped_by"][0]["guardrail"] == "min_replicas"
        assert "held at 1 by min_replicas (asked 0)" in down["reason"]

    assert reader.desired() == 1 and replicas_running(reader.marker) == 1  # a proposal never acts
    assert not any(r.get("source") == "mcp" for r in reader.records()[before:])  # nor is it recorded


async def test_bad_input_gets_one_line_naming_the_argument(reader: Daemon) -> None:
    async with connect(reader.config, "stdio") as client:
        message = await refused(client, "get_metrics", service="wroker")
        assert "no service named 'wroker'" in message and "did you mean 'worker'" in message and "services: worker" in message
        assert "n: input should be greater than or equal to 0, got -1" in await refused(
            client, "propose_scale", service="worker", n=-1, reason="x")
        assert "n: input should be a valid integer" in await refused(client, "propose_scale", service="worker", n="two", reason="x")
        assert "reason: required" in await refused(client, "propose_scale", service="worker", n=2)
        assert "reason: say why" in await refused(client, "propose_scale", service="worker", n=2, reason=" \n\t ")
        assert "unknown argument 'replicas'" in await refused(client, "propose_scale", service="worker", replicas=2, reason="x")
        assert "limit: input should be less than or equal to 50" in await refused(client, "get_recent_decisions", limit=1000)
        message = await refused(client, "get_metric_history", service="worker", metric="queue.backlogg")
        assert "'queue.backlogg' was not observed" in message and "did you mean 'queue.backlog'" in message
        assert "no decision with id 'abc123'" in await refused(client, "explain_decision", decision_id="abc123")
        assert "decision_id: string should match pattern" in await refused(client, "explain_decision", decision_id="../etc")
        message = await refused(client, "apply_scale", service="worker", n=2, reason="x")
        assert message.startswith("apply_scale is off") and "mcp.allow_apply: true" in message
    assert reader.desired() == 1


# --------------------------------------------------------------------------- apply_scale, enabled


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_apply_scale_acts_inside_the_envelope_and_is_recorded_with_source_mcp(
    nats: NatsServer, tmp_path: Path, transport: str
) -> None:
    config, marker = write_config(tmp_path / transport, nats.url, allow_apply=True)
    daemon = Daemon(config, marker)
    try:
        async with connect(config, transport) as client:
            await check_schemas(client, {**READ_TOOLS, **APPLY_TOOL})

            done = await ok(client, "apply_scale", service="worker", n=4, reason="incident 42:\nbacklog expected")
            assert (done["from"], done["to"], done["asked"], done["executed"]) == (1, 2, 4, True)  # one step at a time
            assert done["clamped_by"] == [{"guardrail": "step_limit", "from": 4, "to": 2}]
            assert done["outcome"]["status"] == "ok"
            wait_until("2 replicas", lambda: replicas_running(marker) == 2, every=0.1)
            # status shows the executor as of the daemon's last tick: the next one sees the new count
            wait_until("the daemon's status to show 2 desired", lambda: daemon.desired() == 2, every=0.1)

            (rec,) = [r for r in daemon.records("mcp") if r["id"] == done["decision_id"]]
            assert rec["executed"] and rec["outcome"]["status"] == "ok"
            assert rec["reason"].startswith("mcp: incident 42: backlog expected;")  # the caller's reason, on one line
            assert (rec["current_replicas"], rec["target_replicas"], rec["proposal"]) == (1, 2, 4)

            # cooldown_down (1 h) now holds the service at 2 against the policy's 1, and says for how long
            worker = (await ok(client, "list_services"))["services"][0]
            assert 3500 < worker["cooldowns_left_s"]["cooldown_down_s"] <= 3600
            held = await ok(client, "apply_scale", service="worker", n=1, reason="back to one")
            assert (held["executed"], held["to"], held["clamped_by"][0]["guardrail"]) == (False, 2, "cooldown_down")
            assert "nothing executed" in held["note"]
            (kept,) = [r for r in daemon.records("mcp") if r["id"] == held["decision_id"]]  # recorded all the same
            assert kept["executed"] is False and kept["reason"].startswith("mcp: back to one;")
            assert replicas_running(marker) == 2

            # a paused service: an assistant's proposal says so, its scale is refused
            daemon.client().pause("worker", reason="incident")
            proposal = await ok(client, "propose_scale", service="worker", n=3, reason="more")
            assert proposal["paused"]["reason"] == "incident" and proposal["apply_scale"].startswith("refused while worker is paused")
            message = await refused(client, "apply_scale", service="worker", n=3, reason="more")
            assert "worker is paused until resumed" in message and "docktor resume worker" in message
            assert replicas_running(marker) == 2
    finally:
        daemon.stop()
    wait_until("no replica left after the daemon stopped", lambda: replicas_running(marker) == 0, every=0.1)


# --------------------------------------------------------------------------- no daemon, the log's secrets


async def test_without_a_daemon_tools_say_so_in_one_line(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    async with connect(config, "stdio") as client:
        started = time.monotonic()
        for tool, args in [("list_services", {}), ("get_metrics", {"service": "worker"}),
                           ("propose_scale", {"service": "worker", "n": 2, "reason": "x"}),
                           ("apply_scale", {"service": "worker", "n": 2, "reason": "x"})]:
            message = await refused(client, tool, **args)
            assert f"no docktor daemon is running for {config}" in message, message
            assert f"docktor daemon start --config {config}" in message
        logged = await ok(client, "get_recent_decisions")  # the log a daemon leaves is still read
        assert logged["count"] == 0 and "no docktor daemon is running" in logged["daemon"]
        assert time.monotonic() - started < 30  # answered, not waited on a socket


async def test_what_the_log_holds_is_redacted_with_the_secrets_this_server_knows(nats: NatsServer, tmp_path: Path) -> None:
    """A credential that reached the log unmasked (written by something that did not know it) is
    masked before it leaves: the MCP server registers the secrets its config names."""
    token = "s3cr3t-token-for-mcp"
    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    config.write_text(config.read_text().replace("timeout: 1s}", "timeout: 1s, token_env: DOCKTOR_TEST_NATS_TOKEN}"))
    state = tmp_path / "state"
    state.mkdir()
    line = {"ts": "2026-11-30T10:00:00.000Z", "service": "worker", "mode": "autonomous", "current_replicas": 1,
            "decision": "hold", "target_replicas": 1, "reason": f"held; peer said token={token}", "source": "policy",
            "errors": [f"source: auth failed for {token}"], "id": "0123456789abcdef"}
    (state / "decisions.jsonl").write_text(json.dumps(line) + "\n")
    params = StdioServerParameters(command=sys.executable, args=["-m", "docktor.agent.cli", "mcp", "--config", str(config)],
                                   env={"DOCKTOR_TEST_NATS_TOKEN": token})
    with (tmp_path / "mcp.stderr").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
            decisions = await client.call_tool("get_recent_decisions", {})
            explained = await client.call_tool("explain_decision", {"decision_id": "0123456789abcdef"})
    for result in (decisions, explained):
        assert not result.is_error and token not in text(result) and "***" in text(result), text(result)
    (rec,) = (decisions.structured_content or {})["decisions"]
    assert rec["errors"] == ["source: auth failed for ***"]
