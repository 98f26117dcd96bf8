"""The control channel through the real CLI and real daemons: live status (and the status file when
the daemon is stuck), pause/resume, a manual scale, reload and SIGHUP, the protocol and its Python
client.

Replicas are the local executor's child processes, counted by a marker in their command line
(tests/support/control_setup.py). Who may act behind a running daemon, and stopping one:
test_control_who_acts.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.runtime.control_socket import AsyncControlClient, ControlClient, ControlError
from docktor.agent.runtime.process import process_alive
from tests.support.control_setup import *  # noqa: F403  (fixtures, found by name: setup_factory)
from tests.support.control_setup import Setup
from tests.support.daemons import raw_lines
from tests.support.jetstream import make_streams, publish
from tests.support.peers import NatsServer
from tests.support.waiting import wait_until

# --------------------------------------------------------------------------- status


def test_status_is_live_and_read_from_the_file_when_the_daemon_is_stuck(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4})
    pid = s.start()
    sock = s.state / "docktor.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # only its owner may talk to it
    st = wait_until("a live status with replicas", lambda: (x := s.status()) and x["services"]["worker"]["replicas"] and x)
    # The status file is written after each tick: wait until it has seen the replica running,
    # since that is what the stuck daemon's status is read from below.
    wait_until(
        "the status file with the replica running",
        lambda: (f := s.state / "status.json").exists()
        and (json.loads(f.read_text()).get("services", {}).get("worker", {}).get("replicas") or {}).get("running") == 1,
    )
    assert st["live"] is True and st["pid"] == pid and st["phase"] == "running"
    assert st["config"] == str(s.config.resolve()) and st["services"]["worker"]["bounds"] == {"min": 1, "max": 4}

    os.kill(pid, signal.SIGSTOP)  # stuck: it cannot answer
    try:
        began = time.monotonic()
        r = s.cli("daemon", "status")
        assert time.monotonic() - began < 20
        assert r.returncode == 0 and f"docktor is running: pid {pid}" in r.stdout
        assert r.stderr.startswith("warning: the daemon does not answer on ") and "showing its status file (written" in r.stderr
        st = json.loads(s.cli("daemon", "status", "--json").stdout)
        assert st["live"] is False and st["services"]["worker"]["replicas"]["running"] == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert s.status()["live"] is True


# --------------------------------------------------------------------------- pause, resume


def test_pause_logs_every_decision_and_acts_on_nothing_until_resumed(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4})
    s.start()
    wait_until("one replica", lambda: len(s.replicas("worker")) == 1 and s.status()["services"]["worker"]["replicas"]["running"] == 1)

    r = s.cli("pause", "worker", "--for", "30m", "--reason", "incident 42")
    assert r.returncode == 0 and r.stdout.startswith("paused worker until ") and "nothing is executed" in r.stdout
    paused_at = time.time()
    asyncio.run(publish(s.nats.url, "worker.x", 700))
    wanted = wait_until("paused decisions that would scale up", lambda: [
        d for d in s.decisions("worker", paused_at) if d["decision"] == "scale_up"] if len(
        [d for d in s.decisions("worker", paused_at) if d["decision"] == "scale_up"]) >= 3 else None)
    for d in wanted:
        assert d["executed"] is False and d["outcome"] is None
        assert d["paused"]["reason"] == "incident 42" and d["paused"]["until"] is not None
        assert "; paused until " in d["reason"] and d["reason"].endswith(": not acting")
    assert len(s.replicas("worker")) == 1
    table = s.cli("daemon", "status").stdout
    assert "paused" in table and "until 20" in table
    logs = s.cli("daemon", "logs", "-n", "3").stdout
    assert "│ paused " in logs  # the outcome column says why nothing was executed
    prose = s.cli("explain", "-n", "1", "--changes").stdout
    assert "not executed: the service is paused until 20" in prose and "(docktor pause: incident 42)" in prose

    # a restart keeps the pause
    assert s.cli("daemon", "stop").returncode == 0
    s.start()
    restarted = time.time()
    wait_until("decisions of the restarted daemon", lambda: len(s.decisions("worker", restarted)) >= 3)
    assert s.status()["services"]["worker"]["paused"]["reason"] == "incident 42"
    assert all(not d["executed"] or d["decision"] != "scale_up" for d in s.decisions("worker", restarted))
    assert all(d.get("paused") for d in s.decisions("worker", restarted))

    r = s.cli("resume", "worker")
    assert r.returncode == 0 and r.stdout.strip() == "resumed worker"
    wait_until("a scale-up executed after resume", lambda: any(
        d["decision"] == "scale_up" and d["executed"] and "paused" not in d for d in s.decisions("worker", restarted)))
    assert s.cli("resume", "worker").stdout.strip() == "worker was not paused"
    bad = s.cli("pause", "worker", "--for", "soon")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --for: 'soon' is not a duration (e.g. 30m, 2h, 90s)"


def test_a_pause_for_a_while_ends_by_itself(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4}, backlog={"worker": 700})
    s.start()
    wait_until("the first scale-up", lambda: any(d["executed"] for d in s.decisions("worker")))
    r = s.cli("pause", "worker", "--for", "2s")
    assert r.returncode == 0
    t = time.time()
    wait_until("a paused decision", lambda: any(d.get("paused") for d in s.decisions("worker", t)))
    wait_until("a decision after the pause ended", lambda: any(
        not d.get("paused") for d in s.decisions("worker", t + 2.5)), timeout=30)
    assert s.status()["services"]["worker"]["paused"] is None
    assert "worker: pause ended" in (s.state / "daemon.log").read_text()


# --------------------------------------------------------------------------- manual scale


def test_scale_is_a_manual_decision_clamped_by_min_and_max(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4})
    s.start()
    wait_until("one replica", lambda: len(s.replicas("worker")) == 1)
    s.cli("pause", "worker")  # keep the count where the operator puts it

    r = s.cli("scale", "worker", "--to", "99", "--reason", "load test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("worker: scale_up 1 -> 4 (manual: load test; capped at 4 by max_replicas (asked 99)): ok: ")
    rec = next(d for d in reversed(s.decisions("worker")) if d["source"] == "manual")
    assert (rec["current_replicas"], rec["target_replicas"], rec["proposal"]) == (1, 4, 99)
    assert rec["guardrails"] == [{"name": "max_replicas", "from": 99, "to": 4}] and rec["executed"] is True
    assert rec["outcome"]["status"] == "ok" and rec["envelope"] == {"lo": 1, "hi": 4, "lo_by": "min_replicas", "hi_by": "max_replicas"}
    assert len(s.replicas("worker")) == 4
    # the intent was written before the executor acted, like every decision that acts
    lines = [x for x in raw_lines(s.state / "decisions.jsonl") if x.get("id") == rec["id"]]
    assert [x.get("phase") for x in lines] == ["intent", "outcome"]

    down = json.loads(s.cli("scale", "worker", "--to", "0", "--json").stdout)
    assert (down["target_replicas"], down["guardrails"]) == (1, [{"name": "min_replicas", "from": 0, "to": 1}])
    assert down["reason"].startswith("manual: docktor scale")
    wait_until("one replica again", lambda: len(s.replicas("worker")) == 1)

    unknown = s.cli("scale", "nope", "--to", "2")
    assert unknown.returncode == 2 and unknown.stderr.strip() == "error: no service named 'nope' (services: worker)"
    negative = s.cli("scale", "worker", "--to", "-1")
    assert negative.returncode == 2 and "--to" in negative.stderr


def test_an_advisory_daemon_refuses_a_manual_scale_and_says_what_makes_it_act(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4}, mode="advisory")
    s.start()
    r = s.cli("scale", "worker", "--to", "3")
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: the daemon runs in advisory mode: it never acts (to act, set mode: autonomous "
                                "in its config and run docktor daemon reload)")
    assert s.replicas("worker") == []
    # what it suggests works: the config's mode, reloaded, lets the same command act
    s.mode = "autonomous"
    s.write({"worker": 4})
    assert s.cli("daemon", "reload").returncode == 0
    done = s.cli("scale", "worker", "--to", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["executed"] is True
    wait_until("three replicas", lambda: len(s.replicas("worker")) == 3)


def test_a_daemon_started_with_advisory_says_to_restart_it_without(setup_factory: Any) -> None:
    s = setup_factory({"worker": 4})
    assert s.cli("daemon", "start", "--advisory").returncode == 0
    r = s.cli("scale", "worker", "--to", "3")
    assert r.returncode == 1
    assert r.stderr.strip() == "error: the daemon runs in advisory mode: it never acts (to act, restart it without --advisory)"


# --------------------------------------------------------------------------- reload


def test_reload_keeps_what_did_not_change_and_refuses_a_bad_config(setup_factory: Any) -> None:
    s = setup_factory({"a": 4, "b": 4})
    pid = s.start()
    wait_until("a replica each", lambda: len(s.replicas("a")) == 1 and len(s.replicas("b")) == 1)
    a_before, b_before = s.replicas("a"), s.replicas("b")

    s.write({"a": 4, "b": 6})
    r = s.cli("daemon", "reload")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "restarted b (max_replicas changed)"
    assert "unchanged: a" in r.stdout
    st = s.status()
    assert st["services"]["b"]["bounds"] == {"min": 1, "max": 6} and st["pid"] == pid
    # b's executor settings did not change: its replicas are the same processes; a was not touched at all
    assert s.replicas("a") == a_before and s.replicas("b") == b_before

    # a bad config: the same one-line errors as validate, exit 2, and the daemon runs on
    s.config.write_text(s.config.read_text().replace("max_replicas: 6", "max_replicas: many"))
    validate = s.cli("validate")
    refused = s.cli("daemon", "reload")
    assert refused.returncode == 2 and validate.returncode == 2
    assert refused.stderr.splitlines()[:-1] == validate.stderr.splitlines()
    assert refused.stderr.splitlines()[-1] == "the daemon keeps running the previous config"
    t = time.time()
    wait_until("the daemon to go on deciding", lambda: len(s.decisions("b", t)) >= 2)
    assert s.status()["services"]["b"]["bounds"]["max"] == 6

    # SIGHUP: the same, from a signal; a new service starts, a changed command restarts its replicas
    asyncio.run(make_streams(s.nats.url, {"C": 0}))
    s.write({"a": 4, "b": 6, "c": 2})
    s.config.write_text(s.config.read_text().replace(f"{s.marker}-b", f"{s.marker}-b2"))
    os.kill(pid, signal.SIGHUP)
    wait_until("the reload in the daemon's log", lambda: "reloaded" in (s.state / "daemon.log").read_text()
               and "started c" in (s.state / "daemon.log").read_text())
    wait_until("c's replica and b's new one", lambda: len(s.replicas("c")) == 1 and len(s.replicas("b2")) == 1)
    assert s.replicas("a") == a_before
    wait_until("b's old replica stopped", lambda: not any(process_alive(p) for p in b_before))
    log = (s.state / "daemon.log").read_text()
    assert "b: saved state discarded: cooldown clocks and back-off: the executor changed" in log


# --------------------------------------------------------------------------- the protocol and its client


def test_the_protocol_and_its_python_client(tmp_path: Path, nats_server: NatsServer) -> None:
    """What a later ``docktor mcp`` builds on: a proposal through the whole envelope without acting,
    errors as codes, a socket path longer than a Unix address allows."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    asyncio.run(make_streams(nats_server.url, {"WORKER": 700}))
    s = Setup(tmp_path, nats_server, {"worker": 4})
    s.config.write_text(f"state_dir: {deep}\n" + s.config.read_text().replace("cooldown_up: 0s", "cooldown_up: 300s"))
    s.state = deep
    assert len(str(deep / "docktor.sock")) > 108
    try:
        s.start()
        wait_until("the first scale-up", lambda: any(d["executed"] for d in s.decisions("worker")))
        client = ControlClient(deep / "docktor.sock")
        assert client.ping()["pid"] == s.status()["pid"]

        async def ask() -> dict[str, Any]:
            return await AsyncControlClient(deep / "docktor.sock").scale("worker", 9, reason="the queue grows", source="mcp", dry_run=True)

        before = len(raw_lines(deep / "decisions.jsonl"))
        proposal = asyncio.run(ask())["record"]
        assert proposal["source"] == "mcp" and proposal["mode"] == "dry-run" and proposal["proposal"] == 9
        # the same envelope as the LLM's: held by cooldown_up, which a manual scale would ignore
        assert proposal["target_replicas"] == proposal["current_replicas"] and proposal["envelope"]["hi_by"] == "cooldown_up"
        assert proposal["reason"].startswith(f"mcp: the queue grows; held at {proposal['current_replicas']} by cooldown_up (")
        assert not any(x.get("source") == "mcp" for x in raw_lines(deep / "decisions.jsonl")[before:])  # nothing recorded

        with pytest.raises(ControlError) as e:
            client.call("explode")
        assert e.value.code == "bad_request" and "unknown command 'explode'" in e.value.message
        with pytest.raises(ControlError) as e:
            client.pause("worker", for_s=-5)
        assert e.value.code == "bad_request"
        with pytest.raises(ControlError) as e:
            client.scale("worker", 2, source="root")
        assert e.value.code == "bad_request"

        # garbage on the raw socket: an error answer, and the daemon carries on
        fd = os.open(deep, os.O_PATH)
        try:
            with socket.socket(socket.AF_UNIX) as raw:
                raw.settimeout(10)
                raw.connect(f"/proc/self/fd/{fd}/docktor.sock")
                raw.sendall(b"{not json\n")
                answer = json.loads(raw.makefile().readline())
        finally:
            os.close(fd)
        assert answer["ok"] is False and answer["error"]["code"] == "bad_request"
        assert client.status()["services"]["worker"]["replicas"] is not None
    finally:
        s.stop()
