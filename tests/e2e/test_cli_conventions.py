"""CLI conventions a user brings from docker, kubectl and git, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord
from docktor.agent.timestamps import rfc3339
from tests.support.cli import docktor, write_config
from tests.support.peers import NatsServer


def test_version_and_short_help() -> None:
    from importlib.metadata import version

    v = docktor("--version")
    assert (v.returncode, v.stdout.strip()) == (0, f"docktor {version('docktor')}")
    for args in (["-h"], ["daemon", "-h"], ["daemon", "logs", "-h"], ["llm", "check", "-h"], ["bench", "-h"]):
        done = docktor(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.startswith("Usage: "), args
        assert "<bool>" not in done.stdout, args  # flags are flags, not options taking a boolean


def test_a_group_alone_prints_its_help_once() -> None:
    done = docktor("daemon")
    assert done.returncode == 0
    assert done.stdout.count("Usage: docktor daemon") == 1
    assert "logs" in done.stdout and done.stderr == ""


def write_log(cfg: Path, n: int, errors: list[str] | None = None) -> None:
    log = DecisionLog(cfg.parent / ".docktor" / "decisions.jsonl")
    for i in range(n):
        log.write(DecisionRecord(
            ts=rfc3339(time.time() - n + i), service="worker", mode="autonomous", current_replicas=2, decision="hold",
            target_replicas=2, reason=f"decision number {i}", source="rules", errors=errors or [],
        ))
    log.close()


def test_logs_tail_shows_the_last_n(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, None)
    write_log(cfg, 150)
    default = docktor("daemon", "logs", "-c", str(cfg), "--json")
    reasons = [json.loads(line)["reason"] for line in default.stdout.splitlines()]
    assert reasons == [f"decision number {i}" for i in range(50, 150)]  # the last 100 by default
    three = docktor("daemon", "logs", "-c", str(cfg), "-n", "3", "--json")
    assert [json.loads(line)["reason"] for line in three.stdout.splitlines()] == [f"decision number {i}" for i in (147, 148, 149)]
    everything = docktor("daemon", "logs", "-c", str(cfg), "--tail", "all", "--json")
    assert len(everything.stdout.splitlines()) == 150
    table = docktor("daemon", "logs", "-c", str(cfg), "--tail", "2")
    assert "decision number 149" in table.stdout and "decision number 147" not in table.stdout
    for bad in ("many", "-4"):
        done = docktor("daemon", "logs", "-c", str(cfg), "--tail", bad)
        assert done.returncode == 2 and done.stderr.startswith("error: --tail: "), done.stderr


def test_logs_follow_prints_the_same_columns_as_the_table(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, None)
    write_log(cfg, 2, errors=["source: stream 'JOBS' not found"])
    proc = subprocess.Popen([sys.executable, "-m", "docktor.agent.cli", "daemon", "logs", "-c", str(cfg), "-f"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(10)
    header, first, _ = lines
    assert header.split() == ["TIME", "SERVICE", "DECISION", "REPLICAS", "SOURCE", "OUTCOME", "REASON"]
    assert first.split()[1:5] == ["worker", "hold", "2->2", "rules"]
    assert "decision number 0 | source: stream 'JOBS' not found" in first


@pytest.mark.timeout(120)
def test_decide_table_shows_why_a_service_holds(tmp_path: Path, nats_server: NatsServer) -> None:
    """No stream yet: the table says so next to the hold, not only --json."""
    cfg = write_config(tmp_path, nats_server)
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "decide", "-c", str(cfg), "--dry-run"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"}, check=False)
    assert done.returncode == 0, done.stderr
    # the reason cell may wrap: read the table's text without its borders
    text = " ".join(done.stdout.replace("\u2502", " ").split())
    assert "| source: stream 'JOBS' not found" in text, done.stdout
