"""When the executor cannot be read: ``daemon status``, ``daemon logs`` and ``explain`` say
"replicas unknown (why)", never ``None->None``, ``?/?`` or ``proposed None by none``; and
``daemon logs`` on an 80-column terminal (a real pseudo-terminal) keeps the reason readable (columns dropped in the stated
order, the reason wrapped, never cut). A real daemon, a real nats-server, and the real Kubernetes
executor pointed at a port where no API server listens (a refused connection is a real fault)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from docktor.tools.testing.standins import closed_port
from tests.support.cli import cli_command, cli_environment, docktor, on_a_terminal
from tests.support.jetstream import make_stream
from tests.support.kubeconfigs import write_kubeconfig
from tests.support.peers import NatsServer
from tests.support.waiting import wait_until

RAW = ("None->None", "?/?", "None by", "None -> None", "by none")


def _config(tmp_path: Path, nats: NatsServer) -> Path:
    # a port nothing listens on: the API server is unreachable, every status read fails
    write_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{closed_port()}", "a-token", namespace="queues")
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(f"""
mode: advisory
services:
  - name: worker
    executor: {{kind: kubernetes, kubeconfig: kubeconfig, request_timeout: 1s}}
    policy: rules
    check_interval: 0.5s
    queue: {{kind: nats, url: "{nats.url}", stream: JOBS, consumer: WORKERS, timeout: 2s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
""")
    return cfg


def _on_a_terminal(*args: str, columns: int = 80) -> str:
    """``docktor ARGS`` with its output on a pseudo-terminal ``columns`` wide (a pipe is laid out
    200 wide), as a user's terminal shows it: styles stripped, line ends as written."""
    shown = on_a_terminal(cli_command(*args), cli_environment({"COLUMNS": str(columns)}), columns=columns, timeout=60)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).replace("\r\n", "\n")


def _reason_cells(table: str) -> tuple[list[str], str]:
    """The header's column names, and the reason column's cells joined without spaces (a wrapped
    reason is the same text with its line breaks where spaces were)."""
    lines = [line for line in table.splitlines() if "│" in line or "┃" in line]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    reason = "".join(line.strip("│").split("│")[-1].strip() for line in lines[1:] if "│" in line)
    return header, reason.replace(" ", "")


def test_an_unreadable_executor_reads_as_replicas_unknown_everywhere(tmp_path: Path, nats_server: NatsServer) -> None:
    asyncio.run(make_stream(nats_server.url, 700))
    cfg = _config(tmp_path, nats_server)
    log = tmp_path / ".docktor" / "decisions.jsonl"
    start = docktor("daemon", "start", "--config", str(cfg))
    assert start.returncode == 0, start.stderr
    try:
        wait_until("two decisions in the log", lambda: log.exists() and len(log.read_text().splitlines()) >= 2, 30)
        status = docktor("daemon", "status", "--config", str(cfg))
        narrow = _on_a_terminal("daemon", "logs", "--config", str(cfg), "-n", "1")
    finally:
        stop = docktor("daemon", "stop", "--config", str(cfg))
    assert stop.returncode == 0, stop.stderr
    rec = json.loads(docktor("daemon", "logs", "--config", str(cfg), "-n", "1", "--json").stdout)
    (executor_error,) = [e for e in rec["errors"] if e.startswith("executor: ")]
    why = executor_error.removeprefix("executor: ")
    assert "cannot reach the Kubernetes API" in why
    assert rec["reason"] == f"replicas unknown ({why}): holding"  # the log itself reads well too

    # daemon status: the replicas column says unknown, the reason says why
    assert status.returncode == 0, status.stderr
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in status.stdout.splitlines() if "│" in line]
    assert rows[0][:3] == ["worker", "unknown", "hold"], status.stdout
    assert "replicasunknown(cannotreachtheKubernetesAPI" in "".join(r[3] for r in rows).replace(" ", "")
    assert not any(raw in status.stdout for raw in RAW), status.stdout

    # daemon logs, 80 columns: nothing wider, source and decision dropped first, the whole
    # reason there (wrapped, not cut to a few characters)
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    header, reason = _reason_cells(narrow)
    assert header == ["time", "service", "replicas", "outcome", "reason"], narrow
    assert "…" not in narrow
    assert reason.startswith(f"replicasunknown({why}):holding".replace(" ", "")), narrow
    assert "unknown" in narrow and not any(raw in narrow for raw in RAW), narrow

    # explain: no proposal to speak of, the cause said once
    explained = docktor("explain", "--config", str(cfg), "-n", "1")
    assert explained.returncode == 0, explained.stderr
    lines = explained.stdout.splitlines()
    assert lines[0].endswith("worker  hold (replicas unknown)"), explained.stdout
    assert f"  replicas   replicas unknown ({why}): nothing proposed, holding" in lines
    assert not any(line.startswith("  proposed") for line in lines)
    assert explained.stdout.count(why) == 1
    assert not any(raw in explained.stdout for raw in RAW), explained.stdout
