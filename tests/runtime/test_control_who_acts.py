"""Nobody acts behind a running daemon's back, through the real CLI and real daemons: decide --once
and a second daemon refused, decide --once acting on Compose when no daemon runs (the outcome
recorded, the cooldown kept), a Compose project called like a Swarm service; stop --force, and stop
and status with a broken config.

Replicas are the local executor's child processes (counted by a marker in their command line), or a
Compose service whose engine is deliberately unreachable (the locks are about who may act, not
about the engine). The control channel's commands: test_control_channel.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.runtime.process import process_alive
from tests.support.cli import docktor
from tests.support.control_setup import *  # noqa: F403  (fixtures, found by name: setup_factory)
from tests.support.daemons import raw_lines
from tests.support.jetstream import make_streams
from tests.support.peers import NatsServer
from tests.support.waiting import wait_until

# --------------------------------------------------------------------------- nobody acts behind a daemon's back

COMPOSE_CONFIG = """
state_dir: {state}
services:
  - name: worker
    compose_file: {compose_file}
    project: {project}
    check_interval: 0.5s
    policy: rules
    queue: {{kind: nats, url: "{url}", stream: WORKER, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
"""


def test_decide_once_and_a_second_daemon_refuse_to_act_behind_a_running_daemon(tmp_path: Path, nats_server: NatsServer) -> None:
    """The Compose engine is deliberately unreachable: what is checked is who may act on the
    service (the config's lock, then the target lock across configs), not the engine."""
    asyncio.run(make_streams(nats_server.url, {"WORKER": 0}))
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text("services:\n  worker:\n    image: python:3.12-slim\n")
    project = f"docktor-ctl-{uuid.uuid4().hex[:8]}"
    env = {"DOCKTOR_RUN_DIR": str(tmp_path / "run"), "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    for cfg, state in ((first, tmp_path / "s1"), (second, tmp_path / "s2")):
        cfg.write_text(COMPOSE_CONFIG.format(state=state, compose_file=compose_file, project=project, url=nats_server.url))

    started = docktor("daemon", "start", "--config", str(first), env=env)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split("(pid ")[1].split(")")[0])
    try:
        same = docktor("decide", "--once", "--config", str(first), env=env)
        assert same.returncode == 1 and same.stdout == ""
        assert same.stderr.splitlines() == [
            f"error: a daemon is already running on {tmp_path / 's1'} (pid {pid}, config {first}): it owns the scaling; "
            f"ask it (docktor scale SERVICE --to N --config {first}) or use --dry-run"
        ]
        assert docktor("decide", "--once", "--dry-run", "--window", "0", "--config", str(first), env=env).returncode == 0

        other = docktor("decide", "--once", "--config", str(second), env=env)
        target = f"compose:{env['DOCKER_HOST']}/{project}/worker"
        assert other.returncode == 1
        assert other.stderr.splitlines() == [
            f"error: service worker: {target} is already scaled by daemon (pid {pid}, config {first}): it owns the "
            f"scaling; ask it (docktor scale SERVICE --to N --config {first}) or use --dry-run"
        ]
        twin = docktor("daemon", "start", "--config", str(second), env=env)
        assert twin.returncode == 2
        assert twin.stderr.strip() == (f"error: service worker: {target} is already scaled by daemon (pid {pid}, config "
                                       f"{first}); refusing to start a second daemon on it")
        second_log = tmp_path / "s2" / "decisions.jsonl"
        assert not second_log.exists() or second_log.read_text() == ""  # neither decided nor acted
    finally:
        docktor("daemon", "stop", "--config", str(first), env=env)
    # once the first is gone, the second may run
    again = docktor("daemon", "start", "--config", str(second), env=env)
    assert again.returncode == 0, again.stderr
    docktor("daemon", "stop", "--config", str(second), env=env)


# --------------------------------------------------------------------------- stop


def test_stop_says_what_still_runs_and_force_kills_it(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4})
    pid = s.start()
    wait_until("one replica", lambda: len(s.replicas("worker")) == 1)
    replica = s.replicas("worker")[0]
    os.kill(pid, signal.SIGSTOP)  # a daemon that does not stop
    try:
        r = s.cli("daemon", "stop", "--timeout", "1")
        assert r.returncode == 1
        lines = r.stderr.splitlines()
        assert lines[0] == f"error: docktor (pid {pid}) did not stop within 1 s; still running:"
        assert f"  pid {pid}: docktor daemon" in lines and any(line.startswith(f"  pid {replica}: ") for line in lines)
        assert "--force" in lines[-1]
        assert process_alive(pid)

        r = s.cli("daemon", "stop", "--timeout", "1", "--force")
        assert r.returncode == 0 and r.stdout.startswith(f"killed docktor (pid {pid}) with SIGKILL: it had not stopped after 1 s")
        assert not process_alive(pid)
        # whatever of it is still alive afterwards is named (its local replicas outlive it, to be adopted)
        left = [p for p in [replica] if process_alive(p)]
        assert all(f"still running: pid {p}: " in r.stdout for p in left)
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert s.cli("daemon", "status").returncode == 3


def test_stop_and_status_work_with_a_broken_config(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4})
    original = s.config.read_text()
    s.config.write_text(f"state_dir: {s.tmp / 'elsewhere'}\n" + original)
    s.state = s.tmp / "elsewhere"
    pid = s.start()
    wait_until("one replica", lambda: len(s.replicas("worker")) == 1)

    s.config.write_text("services: [this is: not: valid\n")  # someone is editing it
    st = s.cli("daemon", "status")
    assert st.returncode == 0 and f"docktor is running: pid {pid}" in st.stdout
    down = s.cli("daemon", "stop")
    assert down.returncode == 0 and down.stdout.strip() == f"stopped docktor (pid {pid})"
    assert not process_alive(pid)
    wait_until("no replica left", lambda: not s.replicas("worker"))

    # without the running daemon's pointer, state_dir is read from the file even when it does not validate
    for p in (s.tmp / "run" / "configs").iterdir():
        p.unlink()
    s.config.write_text(f"state_dir: {s.tmp / 'elsewhere'}\nservices: [{{name: worker, max_replicas: lots}}]\n")
    st = s.cli("daemon", "status")
    assert st.returncode == 3 and st.stdout.strip() == "docktor is not running"
    assert st.stderr.startswith("warning: services[0]") and f"using the state in {s.tmp / 'elsewhere'} (state_dir read from the file)" in st.stderr
    s.config.write_text(original)


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_decide_once_acts_on_compose_records_the_outcome_and_keeps_the_cooldown(tmp_path: Path, nats_server: NatsServer) -> None:
    """Without a daemon, decide --once acts (Compose replicas outlive it), records intent and
    outcome, and saves the state it leaves: the next decide --once (or a daemon started next)
    honours the cooldown it started."""
    from tests.support.peers import DOCKER_SKIP_REASON, compose, containers, docker_ok, down, need, unique_project

    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    asyncio.run(make_streams(nats_server.url, {"WORKER": 700}))
    project = unique_project("docktor-decide")
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text('services:\n  worker:\n    image: python:3.12-slim\n    command: ["python", "-c", '
                            '"import time\\nwhile True: time.sleep(1)"]\n    stop_grace_period: 1s\n')
    cfg = tmp_path / "docktor.yaml"
    config = COMPOSE_CONFIG.format(state=tmp_path / "state", compose_file=compose_file, project=project, url=nats_server.url)
    # The container the test creates is a scale-up to the Compose executor (last_scaled), so the
    # first run has no cooldown to wait out; the second gets 300 s, counted from the first's action.
    cfg.write_text(config + "    scale_up_by: 1\n    cooldown_up: 0s\n")
    env = {"DOCKTOR_RUN_DIR": str(tmp_path / "run")}
    try:
        compose(project, compose_file, "up", "-d", "--scale", "worker=1")
        first = docktor("decide", "--once", "--json", "--window", "0", "--config", str(cfg), env=env)
        assert first.returncode == 0, first.stderr
        rec = json.loads(first.stdout)
        assert (rec["decision"], rec["current_replicas"], rec["target_replicas"], rec["executed"]) == ("scale_up", 1, 2, True)
        assert rec["outcome"]["status"] == "ok" and len(containers(project, "worker", all=False)) == 2
        lines = [x for x in raw_lines(tmp_path / "state" / "decisions.jsonl") if x.get("id") == rec["id"]]
        assert [x.get("phase") for x in lines] == ["intent", "outcome"]
        assert json.loads((tmp_path / "state" / "state" / "worker.json").read_text())["last_up_at"] is not None

        cfg.write_text(config + "    scale_up_by: 1\n    cooldown_up: 300s\n")  # a new length keeps the saved clock
        second = json.loads(docktor("decide", "--once", "--json", "--window", "0", "--config", str(cfg), env=env).stdout)
        assert (second["decision"], second["current_replicas"], second["executed"]) == ("hold", 2, False)
        assert second["envelope"]["hi_by"] == "cooldown_up" and second["matched_rules"]
        assert len(containers(project, "worker", all=False)) == 2
    finally:
        down(project, compose_file)


def test_a_compose_project_called_swarm_is_not_the_swarm_service_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both executors name their target ``<engine>/swarm/worker``; the daemon names each with its
    executor's kind, so holding one never refuses the other (and the saved state keeps them apart)."""
    from docktor.agent.config.load import parse_config
    from docktor.agent.runtime.supervisor import Supervisor

    monkeypatch.setenv("DOCKTOR_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # nothing is asked of the engine
    (tmp_path / "compose.yaml").write_text("services:\n  worker:\n    image: python:3.12-slim\n")
    config = parse_config(f"""
state_dir: {tmp_path / 'state'}
services:
  - name: worker
    compose_file: compose.yaml
    project: swarm
    policy: rules
  - name: swarmed
    executor: {{kind: swarm, service: worker}}
    policy: rules
""", tmp_path / "docktor.yaml", {})
    daemon = Supervisor(config)
    loops = [daemon.build_loop(svc) for svc in config.services]
    try:
        daemon.claim(loops, "test")  # the compose one held, then the swarm one: no TargetBusy
        compose_target, swarm_target = (loop.target() for loop in loops)
        assert compose_target is not None and compose_target.startswith("compose:")
        assert swarm_target is not None and swarm_target.startswith("swarm:")
        assert compose_target.split(":", 1)[1] == swarm_target.split(":", 1)[1]  # what the two executors call them
        assert all(loop.target_lock is not None for loop in loops)
        assert daemon.identity_of(loops[0]).executor != daemon.identity_of(loops[1]).executor
    finally:
        for loop in loops:
            loop.release_target()
