"""``docktor mcp`` through the MCP SDK's own client, over stdio and streamable HTTP, against a real
daemon: ``docktor daemon start --foreground`` with the local executor and a real nats-server,
both started here. Replicas are counted from /proc, outside the daemon. Over HTTP the client sends
the bearer token the server made (``state_dir/mcp.token``); plain HTTP requests, one of them from a
real second user (``runuser -u nobody``), show what a client without it gets.

Skipped only when the ``mcp`` package is absent (it is in requirements.lock, so never in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the mcp package is not installed (pip install -r requirements.lock)")

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from docktor.agent.runtime.control_socket import ControlClient, ControlError, ControlUnavailable
from docktor.agent.runtime.log_reader import read_records
from tests.support.cli import docktor
from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer, start_nats
from tests.support.waiting import wait_until

CONFIG = """
state_dir: {state}
mcp: {{allow_apply: {allow_apply}}}
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)", "{marker}"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 5
    check_interval: 0.5s
    policy: target
    target_per_replica: 100
    scale_up_by: 1
    cooldown_up: 0s
    cooldown_down: 1h
    scale_down_stabilization: 0s
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
"""

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




def replicas_running(marker: str) -> int:
    """Processes whose command line carries ``marker``: the local executor's replicas, from /proc."""
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    n += 1
            except OSError:
                continue
    return n


class Daemon:
    """A real ``docktor daemon start --foreground`` for ``config``, stopped by :meth:`stop`."""

    def __init__(self, config: Path, marker: str):
        self.config, self.marker = config, marker
        self.state = config.parent / "state"
        self.log = (config.parent / "daemon.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--foreground", "--config", str(config)],
                                     stdout=self.log, stderr=self.log)
        wait_until("the daemon's first decision", self.ready, every=0.1)

    def client(self) -> ControlClient:
        return ControlClient(self.state / "docktor.sock", timeout=5)

    def status(self) -> dict[str, Any]:
        try:
            return dict(self.client().status())
        except (ControlUnavailable, ControlError):
            assert self.proc.poll() is None, Path(self.log.name).read_text()
            return {}

    def ready(self) -> bool:
        worker = (self.status().get("services") or {}).get("worker") or {}
        return bool(worker.get("last_decision")) and (worker.get("replicas") or {}).get("running") == 1

    def desired(self) -> int | None:
        return ((self.status().get("services") or {}).get("worker", {}).get("replicas") or {}).get("desired")

    def records(self, source: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_records(self.state / "decisions.jsonl") if source is None or r.get("source") == source]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def write_config(folder: Path, nats_url: str, *, allow_apply: bool) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    marker = f"docktor-mcp-test-{os.getpid()}-{folder.name}"
    config = folder / "docktor.yaml"
    config.write_text(CONFIG.format(state=folder / "state", allow_apply=str(allow_apply).lower(), python=sys.executable,
                                    marker=marker, url=nats_url))
    return config, marker


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("js"))
    try:
        import asyncio

        asyncio.run(make_stream(server.url))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reader(nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose config leaves apply_scale off (the default)."""
    config, marker = write_config(tmp_path_factory.mktemp("reader"), nats.url, allow_apply=False)
    daemon = Daemon(config, marker)
    try:
        yield daemon
    finally:
        daemon.stop()


def token_file(config: Path) -> Path:
    """Where ``docktor mcp --http`` keeps the token it made: ``state_dir/mcp.token`` (the default)."""
    return config.parent / "state" / "mcp.token"


class HttpServer:
    """``docktor mcp --config CONFIG --http 127.0.0.1:0``, its stderr in ``errlog``, until :meth:`stop`."""

    def __init__(self, config: Path, errlog: Path, env: dict[str, str] | None = None):
        self.errlog = errlog
        with errlog.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "docktor.agent.cli", "mcp", "--config", str(config), "--http", "127.0.0.1:0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})},
            )
        self.url: str = wait_until("docktor mcp's URL", self._url, every=0.1)

    def _url(self) -> str | None:
        assert self.proc.poll() is None, self.errlog.read_text()
        for line in self.errlog.read_text().splitlines():
            if "serving http://" in line:
                return line.split("serving ", 1)[1].split()[0]
        return None

    def stop(self) -> None:
        self.proc.terminate()
        # SIGTERM stops it as Ctrl-C does: exit 0, not killed by the signal
        assert self.proc.wait(30) == 0, self.errlog.read_text()


@asynccontextmanager
async def connect(config: Path, transport: str) -> AsyncIterator[Client]:
    """The SDK's client on ``docktor mcp --config CONFIG``, over stdio or streamable HTTP (with the
    bearer token the server made, read from its file as an operator would)."""
    errlog = config.parent / f"mcp-{transport}.stderr"
    if transport == "stdio":
        with errlog.open("w+") as err:
            params = StdioServerParameters(command=sys.executable, args=["-m", "docktor.agent.cli", "mcp", "--config", str(config)])
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as client:
                yield client
        return
    server = HttpServer(config, errlog)
    try:
        # the SDK's way to send headers: its transport on an httpx2 client of ours (MCP's timeouts)
        headers = {"Authorization": f"Bearer {token_file(config).read_text().strip()}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http, \
                Client(streamable_http_client(server.url, http_client=http), read_timeout_seconds=60) as client:
            yield client
    finally:
        server.stop()


def text(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def ok(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    if tool != "explain_decision":
        assert json.loads(text(result)) == result.structured_content  # the text is the same answer
    return dict(result.structured_content)


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


# --------------------------------------------------------------------------- no daemon, the HTTP listener


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


def test_http_listens_on_loopback_unless_the_config_allows_more(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    done = docktor("mcp", "--config", str(config), "--http", "0.0.0.0:0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --http: not a loopback address")
    assert "mcp.allow_remote: true" in done.stderr

    text_ = config.read_text().replace("mcp: {allow_apply: false}", "mcp: {allow_apply: true, allow_remote: true}")
    config.write_text(text_)
    done = docktor("mcp", "--config", str(config), "--http", "0.0.0.0:0")
    assert done.returncode == 2 and "apply_scale is never served beyond this host" in done.stderr

    for bad, says in [("example.com:80", "the host must be an IP address or localhost"), ("127.0.0.1:x", "must be host:port"),
                      ("127.0.0.1:70000", "the port must be between 0")]:
        done = docktor("mcp", "--config", str(config), "--http", bad)
        assert done.returncode == 2 and says in done.stderr, done.stderr


def test_a_port_in_use_is_one_line_and_exit_2(nats: NatsServer, tmp_path: Path) -> None:
    import socket

    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = docktor("mcp", "--config", str(config), "--http", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --http: cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_http_refuses_a_host_header_a_web_page_could_send(reader: Daemon) -> None:
    """DNS rebinding: a loopback server answers only requests addressed to a loopback name."""
    async with connect(reader.config, "http") as client:
        url = next(line.split("serving ", 1)[1].split()[0]
                   for line in (reader.config.parent / "mcp-http.stderr").read_text().splitlines() if "serving http://" in line)
        assert (await ok(client, "list_services"))["services"]
        port = url.rsplit(":", 1)[1].split("/")[0]
        request = urllib.request.Request(
            url, method="POST", data=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
            headers={"Host": f"attacker.example:{port}", "Content-Type": "application/json",
                     "Accept": "application/json, text/event-stream",
                     "Authorization": f"Bearer {token_file(reader.config).read_text().strip()}"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)
        assert 400 <= e.value.code < 500 and e.value.code != 401  # the Host check refused it, not the token


# --------------------------------------------------------------------------- the HTTP transport's bearer token

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "plain-http", "version": "1"}}}).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """A plain HTTP POST (no MCP client): status, headers (lower-case names) and body."""
    request = urllib.request.Request(url, method="POST", data=body, headers={**MCP_HEADERS, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def generated_lines(errlog: Path) -> list[str]:
    return [line for line in errlog.read_text().splitlines() if "generated a bearer token" in line]


async def test_http_without_the_token_or_with_a_wrong_one_is_401(reader: Daemon) -> None:
    async with connect(reader.config, "http") as client:  # the token is made (or reused) and works
        assert (await ok(client, "list_services"))["services"]
    errlog = reader.config.parent / "mcp-bare.stderr"
    server = HttpServer(reader.config, errlog)
    try:
        token = token_file(reader.config).read_text().strip()
        wrong = "wrong-token-but-long-enough-0123456789"
        for headers, challenge in [({}, 'Bearer realm="docktor mcp"'),
                                   ({"Authorization": f"Bearer {wrong}"}, 'Bearer realm="docktor mcp", error="invalid_token"'),
                                   ({"Authorization": f"Basic {token}"}, 'Bearer realm="docktor mcp", error="invalid_token"'),
                                   ({"Authorization": f"Bearer {token[:-1]}"}, 'Bearer realm="docktor mcp", error="invalid_token"')]:
            status, answer_headers, body = post(server.url, INITIALIZE, headers)
            assert (status, answer_headers.get("www-authenticate")) == (401, challenge), (headers, status, body)
            assert "mcp-session-id" not in answer_headers and json.loads(body)["error"] == "unauthorized"  # the app never saw it
        status, answer_headers, body = post(server.url, INITIALIZE, {"Authorization": f"bearer {token}"})  # scheme: any case
        assert status == 200 and answer_headers.get("mcp-session-id"), body
    finally:
        server.stop()
    said = errlog.read_text()
    assert "refused 1 HTTP request without a valid bearer token (last: no token, from 127.0.0.1:" in said  # then quiet for 10 s
    assert wrong not in said and token not in said and "Authorization" not in said  # neither token nor header is logged
    assert not generated_lines(errlog)  # the file made by the first start is read silently


def test_a_second_local_user_cannot_scale_over_http(nats: NatsServer, tmp_path: Path) -> None:
    """The attack of issue 21: ``nobody``, a plain HTTP client on the same machine, asks a server
    with ``allow_apply: true`` to scale. It gets 401 at the first request, and no decision is recorded."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user (runuser -u nobody); CI runs as root")
    config, marker = write_config(tmp_path, nats.url, allow_apply=True)
    daemon = Daemon(config, marker)
    server = HttpServer(config, tmp_path / "mcp-attacked.stderr")
    try:
        attacker = f"""
import json, urllib.request, urllib.error
url, headers = {server.url!r}, {MCP_HEADERS!r}
def post(body, extra={{}}):
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(), headers={{**headers, **extra}})
    try:
        with urllib.request.urlopen(request, timeout=30) as a:
            return a.status, a.headers.get("mcp-session-id") or ""
    except urllib.error.HTTPError as e:
        return e.code, ""
try:
    open({str(token_file(config))!r}).read()
    stolen = "read"
except OSError as e:
    stolen = type(e).__name__
status, session = post(json.loads({INITIALIZE.decode()!r}))
call = {{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {{"name": "apply_scale",
        "arguments": {{"service": "worker", "n": 3, "reason": "as nobody"}}}}}}
applied, _ = post(call, {{"mcp-session-id": session}} if session else {{}})
print(json.dumps({{"initialize": status, "apply": applied, "token_file": stolen}}))
"""
        done = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", attacker],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"initialize": 401, "apply": 401, "token_file": "PermissionError"}
        assert daemon.records("mcp") == [] and daemon.desired() == 1 and replicas_running(marker) == 1
    finally:
        server.stop()
        daemon.stop()


def test_the_token_is_made_once_shown_once_saved_0600_and_rotated_by_deleting_it(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    path = token_file(config)
    first = HttpServer(config, tmp_path / "first.stderr")
    first.stop()
    (line,) = generated_lines(first.errlog)
    token = path.read_text().strip()
    assert line.endswith(f"shown only this once: {token}") and f"saved it in {path} (0600" in line
    assert len(token) >= 40 and (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)

    again = HttpServer(config, tmp_path / "again.stderr")  # the next start reuses the file, silently
    try:
        assert not generated_lines(again.errlog) and f"bearer token from {path}" in again.errlog.read_text()
        assert post(again.url, INITIALIZE, {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        again.stop()
    assert token not in again.errlog.read_text()

    path.unlink()  # rotation: a new token at the next start
    rotated = HttpServer(config, tmp_path / "rotated.stderr")
    try:
        new = path.read_text().strip()
        assert new != token and len(generated_lines(rotated.errlog)) == 1
        assert post(rotated.url, INITIALIZE, {"Authorization": f"Bearer {token}"})[0] == 401
    finally:
        rotated.stop()

    from_env = "a-token-from-the-environment-0123456789"  # the environment comes first; the file is left alone
    env = HttpServer(config, tmp_path / "env.stderr", env={"DOCKTOR_MCP_TOKEN": from_env})
    try:
        assert "bearer token from $DOCKTOR_MCP_TOKEN" in env.errlog.read_text() and not generated_lines(env.errlog)
        assert post(env.url, INITIALIZE, {"Authorization": f"Bearer {from_env}"})[0] == 200
        assert post(env.url, INITIALIZE, {"Authorization": f"Bearer {new}"})[0] == 401
    finally:
        env.stop()
    assert path.read_text().strip() == new and from_env not in env.errlog.read_text()


@pytest.mark.parametrize("unsafe", ["another user's", "0644", "0664", "a symbolic link"])
def test_an_unsafe_token_file_is_refused_at_start(nats: NatsServer, tmp_path: Path, unsafe: str) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    path = token_file(config)
    path.parent.mkdir(mode=0o700)
    token = "a-token-someone-else-may-know-0123456789"
    if unsafe == "a symbolic link":
        target = tmp_path / "elsewhere.token"
        target.write_text(token)
        target.chmod(0o600)
        path.symlink_to(target)
    else:
        path.write_text(token)
        path.chmod(0o600 if unsafe == "another user's" else int(unsafe, 8))
        if unsafe == "another user's":
            if os.geteuid() != 0:
                pytest.skip("needs root to give a file to another user (nobody); CI runs as root")
            os.chown(path, 65534, 65534)
    done = docktor("mcp", "--config", str(config), "--http", "127.0.0.1:0", timeout=30)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("error: mcp.token_file: ") and f"{path} " in line, done.stderr
    assert {"another user's": "is owned by nobody (uid 65534)", "0644": "is readable by other users (mode 0644)",
            "0664": "(mode 0664)", "a symbolic link": "is a symbolic link"}[unsafe] in line
    assert token not in done.stderr


@pytest.mark.parametrize("value, says", [
    ("", "must hold one token of visible ASCII characters, without spaces (it is empty)"),
    ("short-token", "holds a token of fewer than 16 characters"),
])
def test_a_weak_token_in_the_environment_is_refused_at_start(nats: NatsServer, tmp_path: Path, value: str, says: str) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "mcp", "--config", str(config), "--http", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30, check=False, env={**os.environ, "DOCKTOR_MCP_TOKEN": value})
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("error: mcp.token_env: environment variable DOCKTOR_MCP_TOKEN") and says in line
    assert not value or value not in line


def test_http_auth_none_serves_read_only_tools_and_is_refused_with_allow_apply(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=True)
    config.write_text(config.read_text().replace("mcp: {allow_apply: true}", "mcp: {allow_apply: true, http_auth: none}"))
    for command in (["validate"], ["mcp", "--http", "127.0.0.1:0"]):
        done = docktor(*command, "--config", str(config), timeout=30)
        (line,) = done.stderr.strip().splitlines()
        assert done.returncode == 2 and line.startswith("error: mcp.http_auth: none serves the MCP tools over HTTP"), done.stderr
        assert "allow_apply is true" in line

    config.write_text(config.read_text().replace("allow_apply: true", "allow_apply: false"))
    assert docktor("validate", "--config", str(config)).returncode == 0
    server = HttpServer(config, tmp_path / "none.stderr")  # for an operator's trusted proxy in front: no token
    try:
        assert "no authentication: mcp.http_auth is none" in server.errlog.read_text()
        assert post(server.url, INITIALIZE, {})[0] == 200
    finally:
        server.stop()
    assert not token_file(config).exists()


def test_token_env_is_a_name_and_a_pasted_token_is_not_echoed(nats: NatsServer, tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, nats.url, allow_apply=False)
    pasted = "Zx9-pasted/token+value="
    config.write_text(config.read_text().replace("mcp: {allow_apply: false}", f'mcp: {{allow_apply: false, token_env: "{pasted}"}}'))
    done = docktor("validate", "--config", str(config))
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line == "error: mcp.token_env: must be the name of an environment variable (the token itself goes in the environment)"
