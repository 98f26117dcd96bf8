"""The decision log never lies on a full disk: a real small tmpfs as ``state_dir``, filled mid-run.

The daemon runs for real (nats-server, the local executor's child processes, the decision log and
status file on a 1 MiB tmpfs). While the disk is full it must not act, must keep deciding, must
say so (stderr, ``daemon status``), and must resume when space returns. Afterwards every line of
the log parses and every scale action the executor was asked for is in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.runtime.log_reader import log_files, read_records
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.cli import cli_command, docktor
from tests.support.jetstream import make_stream, publish
from tests.support.peers import NatsServer, SmallDisk
from tests.support.waiting import eventually


def config_text(state_dir: Path, url: str, marker: str, interval: float = 0.3) -> str:
    # from 0 to min_replicas, then one more replica per 50 messages waiting per replica, one step per tick
    return f"""
state_dir: {state_dir}
services:
  - name: worker
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)", "{marker}"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 8
    check_interval: {interval}
    policy: rules
    scale_up_by: 1
    cooldown_up: 0
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog_per_replica, op: ">", value: 50}}]
"""


def every_line_whole(state_dir: Path) -> list[dict[str, Any]]:
    files = log_files(state_dir / "decisions.jsonl")
    assert files
    for f in files:
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{f.name} ends mid-line"
        for line in data.splitlines():
            json.loads(line)  # every line parses
    return list(read_records(state_dir / "decisions.jsonl"))


async def test_full_state_dir_mid_run_no_unrecorded_action_then_resume(
    disk: SmallDisk, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await make_stream(nats_server.url)
    state = disk.path
    cfg = parse_config(config_text(state, nats_server.url, "docktor-diskfull-inproc"), state / "docktor.yaml", {})
    daemon = Supervisor(cfg, log_path=state / "decisions.jsonl", status_path=state / "status.json")
    await daemon.open()
    runner = daemon.loops["worker"]
    asked: list[int] = []  # every scale the executor was asked for, seen at the executor itself
    real_scale = runner.executor.scale

    async def scale(n: int) -> Any:
        asked.append(n)
        return await real_scale(n)

    runner.executor.scale = scale  # type: ignore[method-assign]
    desired = lambda: runner.last_status.desired if runner.last_status else -1  # noqa: E731
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="docktor")
    task = asyncio.create_task(daemon.run(stop))
    try:
        await publish(nats_server.url, "jobs.a", 120)
        await eventually("1 -> 3 replicas (120 messages, > 50 per replica)", lambda: desired() == 3)

        disk.fill()
        await publish(nats_server.url, "jobs.a", 200)  # 320 waiting: the rules now want 7
        # The log's last page may still hold a line or two (tmpfs allocates whole pages): what
        # fits is recorded and acted on. Then the daemon refuses to act, and keeps refusing.
        await eventually("a scale-up refused on the full disk", lambda: daemon.recorder.refused >= 1)
        before, held, ticks = len(asked), desired(), runner.ticks
        await eventually("five more ticks on a full disk", lambda: runner.ticks >= ticks + 5)
        # it kept deciding (scale-ups, in memory) but asked the executor for nothing
        assert len(asked) == before and desired() == held < 7
        last = runner.last_record
        assert last is not None and last.decision == "scale_up" and last.executed is False
        assert "not acted: the decision log is not writable (No space left on device)" in last.reason
        health = daemon.status()["decision_log"]
        assert health["writable"] is False and health["error"] == "No space left on device"
        assert health["refused_actions"] >= 5 and health["unrecorded"] >= 5
        assert any("is not writable (No space left on device): not scaling until it is" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.ERROR)
        # the status file was rewritten in place on the full disk: it says so too
        on_disk = json.loads((state / "status.json").read_text())
        assert on_disk["decision_log"]["writable"] is False

        disk.free()
        await eventually("3 -> 7 once space is back", lambda: desired() == 7)
        assert daemon.status()["decision_log"]["writable"] is True
        assert any("decision log writable again" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        await task
        await daemon.close()

    records = every_line_whole(state)
    executed = [r for r in records if r["executed"]]
    # every action the executor was asked for is in the log, in order, with its outcome
    assert [r["target_replicas"] for r in executed] == asked == [1, 2, 3, 4, 5, 6, 7]
    assert all(r["outcome"]["status"] == "ok" for r in executed)
    # and nothing moved between two logged decisions: each starts where the previous one left off
    for prev, rec in zip(records, records[1:]):
        expected = prev["target_replicas"] if prev["executed"] else prev["current_replicas"]
        assert rec["current_replicas"] == expected, (prev, rec)
    # the first line after the gap names it
    gap = [r for r in records if any(e.startswith("decision log: not writable from") for e in r["errors"])]
    assert len(gap) == 1 and gap[0]["current_replicas"] == held and gap[0]["target_replicas"] == held + 1
    note = next(e for e in gap[0]["errors"] if e.startswith("decision log:"))
    assert "No space left on device" in note and "scale action(s) not taken" in note


def replicas_running(marker: str) -> int:
    """Processes whose command line carries ``marker``: the replicas, counted outside the daemon."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmd and b"daemon" not in cmd:
            n += 1
    return n


async def test_cli_daemon_on_a_full_disk_says_so_on_stderr_and_in_status(disk: SmallDisk, nats_server: NatsServer, tmp_path: Path) -> None:
    """``docktor daemon start --foreground``, its stderr, ``daemon status`` and ``daemon logs``."""
    await make_stream(nats_server.url)
    marker = f"docktor-diskfull-cli-{os.getpid()}"
    config = tmp_path / "docktor.yaml"  # the config lives off the small disk; its state on it
    config.write_text(config_text(disk.path, nats_server.url, marker, interval=0.3))
    stderr = (tmp_path / "stderr.txt").open("w+")
    proc = subprocess.Popen(cli_command("daemon", "start", "--foreground", "--config", str(config)),
                            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        await publish(nats_server.url, "jobs.a", 120)
        await eventually("3 replicas", lambda: replicas_running(marker) == 3)
        disk.fill()
        await publish(nats_server.url, "jobs.a", 200)

        def status() -> dict[str, Any]:
            done = docktor("daemon", "status", "--config", str(config), "--json")
            try:
                return dict(json.loads(done.stdout))
            except ValueError:
                return {}

        await eventually("a refused scale-up", lambda: (status().get("decision_log") or {}).get("refused_actions", 0) >= 1)
        held = replicas_running(marker)  # counted from /proc, outside the daemon
        await eventually("three more refused", lambda: (status().get("decision_log") or {}).get("refused_actions", 0) >= 4)
        assert replicas_running(marker) == held < 7  # nothing was started while the log could not say so
        table = docktor("daemon", "status", "--config", str(config))
        assert table.returncode == 0 and "decision log NOT WRITABLE" in table.stdout and "No space left on device" in table.stdout
        stderr.flush()
        assert "is not writable (No space left on device): not scaling until it is" in Path(stderr.name).read_text()

        disk.free()
        await eventually("7 replicas once space is back", lambda: replicas_running(marker) == 7)
    finally:
        proc.terminate()
        proc.wait(30)
        stderr.close()
    assert proc.returncode == 0, Path(stderr.name).read_text()[-2000:]
    assert "decision log writable again" in Path(stderr.name).read_text()
    logs = docktor("daemon", "logs", "--config", str(config), "--json")
    records = [json.loads(line) for line in logs.stdout.splitlines()]
    executed = [r["target_replicas"] for r in records if r["executed"]]
    assert executed == [1, 2, 3, 4, 5, 6, 7], executed
    # no record of the log is a bare intent or outcome: `daemon logs` shows one line per decision
    assert all("phase" not in r for r in records)
    every_line_whole(disk.path)
