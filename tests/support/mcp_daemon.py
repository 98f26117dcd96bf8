"""What the ``docktor mcp`` tests share (tests/e2e/test_mcp_tools.py, test_mcp_http.py): a real
daemon's config and process, a module's nats-server and read-only daemon, ``docktor mcp --http``
as a process, the SDK client on either transport, and the checks on a tool's answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer, start_nats
from tests.support.waiting import wait_until

__all__ = ["nats", "reader"]  # the fixtures: a test module takes them with `import *`


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
