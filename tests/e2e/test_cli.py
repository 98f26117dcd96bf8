"""The CLI as a user runs it: real processes, real nats-server, real child-process replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import docktor, write_config
from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer
from tests.support.waiting import wait_until


def test_validate_ok_and_problems(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, None)
    ok = docktor("validate", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("worker: local executor, replicas 2-4, every 0.5s, policy rules, queue nats JOBS/WORKERS")

    cfg.write_text(cfg.read_text().replace('op: ">"', 'op: "=>"').replace("min_replicas: 2", "min_replicas: 9"))
    bad = docktor("validate", "--config", str(cfg))
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert any(line.startswith("error: services[0].rules.scale_up_when[0].op: must be") for line in lines)
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "content",
    ["", "not: [valid", "services: 3", "services:\n  - name: a\n    max_replicas: -1\n", "\x00\x01"],
)
def test_validate_never_prints_a_traceback(tmp_path: Path, content: str) -> None:
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(content)
    r = docktor("validate", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    r = docktor("validate", "--config", str(tmp_path / "nope.yaml"))
    assert (r.returncode, r.stderr.strip()) == (2, f"error: {tmp_path / 'nope.yaml'}: no such file")


def test_decide_once_dry_run_json_never_acts(tmp_path: Path, nats_server: NatsServer) -> None:
    import asyncio

    asyncio.run(make_stream(nats_server.url, 700))
    cfg = write_config(tmp_path, nats_server)
    r = docktor("decide", "--config", str(cfg), "--once", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.strip().splitlines()
    rec = json.loads(line)
    assert rec["service"] == "worker" and rec["mode"] == "dry-run"
    assert rec["observations"]["queue.pending"] == 700.0
    assert (rec["current_replicas"], rec["decision"], rec["target_replicas"]) == (0, "scale_up", 2)
    assert rec["executed"] is False and rec["outcome"] is None
    # and it was logged
    logged = [json.loads(x) for x in (tmp_path / ".docktor" / "decisions.jsonl").read_text().splitlines()]
    assert logged[-1]["ts"] == rec["ts"]


def test_decide_once_refuses_to_act_on_replicas_that_live_in_the_daemon(tmp_path: Path, nats_server: NatsServer) -> None:
    """The local executor's replicas are child processes: started by decide --once, they would die
    when it exits. It refuses, names the service and the way out; nothing is logged or started.
    (decide --once acting on Compose, and refusing behind a daemon's back: tests/runtime/test_control_who_acts.py.)"""
    import asyncio

    asyncio.run(make_stream(nats_server.url, 10))
    cfg = write_config(tmp_path, nats_server)
    r = docktor("decide", "--config", str(cfg), "--once", "--json")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: services[0] (worker): executor local runs its replicas inside the daemon: decide --once would stop them "
        "when it exits; use --dry-run, or start the daemon and ask it: docktor scale worker --to N"
    ]
    assert not (tmp_path / ".docktor" / "decisions.jsonl").exists()
    assert docktor("decide", "--config", str(cfg), "--once", "--advisory", "--json").returncode == 0  # deciding alone is fine


def test_logs_rejects_a_bad_since_and_unknown_service(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, None)
    r = docktor("daemon", "logs", "--config", str(cfg), "--since", "yesterday")
    assert r.returncode == 2 and r.stderr.startswith("error: --since:")
    r = docktor("daemon", "logs", "--config", str(cfg), "--service", "nope")
    assert r.returncode == 2 and "--service" in r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _replica_pids(daemon_pid: int) -> list[int]:
    children = Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_daemon_lifecycle_start_status_logs_refuse_second_stop(tmp_path: Path, nats_server: NatsServer) -> None:
    import asyncio

    asyncio.run(make_stream(nats_server.url))
    cfg = write_config(tmp_path, nats_server)
    start = docktor("daemon", "start", "--config", str(cfg))
    assert start.returncode == 0, start.stderr
    try:
        st = json.loads(docktor("daemon", "status", "--config", str(cfg), "--json").stdout)
        assert st["running"] is True
        pid = st["pid"]
        assert _alive(pid)

        again = docktor("daemon", "start", "--config", str(cfg))
        assert again.returncode == 1
        assert again.stderr.strip() == (f"error: a daemon is already running on {tmp_path / '.docktor'} (pid {pid}, "
                                        f"config {cfg}); stop it with: docktor daemon stop --config {cfg}")
        # Another config on the same state_dir is told which daemon holds it, and how to stop that one
        # (not `--config other.yaml`, which names the config of no running daemon).
        other = tmp_path / "other" / "docktor.yaml"
        other.parent.mkdir()
        other.write_text(f"state_dir: {tmp_path / '.docktor'}\n" + cfg.read_text())
        shared = docktor("daemon", "start", "--config", str(other))
        assert shared.returncode == 1
        assert shared.stderr.strip() == (
            f"error: a daemon is already running on {tmp_path / '.docktor'} (pid {pid}, config {cfg}); it runs another "
            f"config with the same state_dir; stop it with: docktor daemon stop --config {cfg}")

        wait_until("three decisions in the log", lambda: len((tmp_path / ".docktor" / "decisions.jsonl").read_text().splitlines()) >= 3
                   if (tmp_path / ".docktor" / "decisions.jsonl").exists() else False, 20)
        st = json.loads(docktor("daemon", "status", "--config", str(cfg), "--json").stdout)
        assert st["services"]["worker"]["replicas"]["running"] == 2
        replicas = _replica_pids(pid)
        assert len(replicas) == 2
        shown = docktor("daemon", "status", "--config", str(cfg))
        assert shown.returncode == 0 and f"docktor is running: pid {pid}" in shown.stdout
        rows = [[cell.strip() for cell in line.split("│")[1:3]] for line in shown.stdout.splitlines() if "│" in line]
        assert ["worker", "2/2"] in rows

        logs = docktor("daemon", "logs", "--config", str(cfg), "--json", "--since", "5m")
        recs = [json.loads(x) for x in logs.stdout.splitlines()]
        assert recs[0]["decision"] == "scale_up" and recs[0]["executed"] is True
        assert all(r["service"] == "worker" for r in recs)
        table = docktor("daemon", "logs", "--config", str(cfg))
        assert "scale_up" in table.stdout and "raised to 2 by min_replicas (asked 0)" in table.stdout
    finally:
        stop = docktor("daemon", "stop", "--config", str(cfg))
    assert stop.returncode == 0 and stop.stdout.startswith("stopped docktor")
    assert not _alive(pid)
    assert not any(_alive(p) for p in replicas), "replicas outlived the daemon"
    st = docktor("daemon", "status", "--config", str(cfg))
    assert st.returncode == 3 and "not running" in st.stdout


def test_advisory_daemon_logs_but_never_acts(tmp_path: Path, nats_server: NatsServer) -> None:
    import asyncio

    asyncio.run(make_stream(nats_server.url, 900))
    cfg = write_config(tmp_path, nats_server, mode="advisory")
    assert docktor("daemon", "start", "--config", str(cfg)).returncode == 0
    log = tmp_path / ".docktor" / "decisions.jsonl"
    try:
        wait_until("four decisions in the log", lambda: log.exists() and len(log.read_text().splitlines()) >= 4, 20)
        pid = json.loads(docktor("daemon", "status", "--config", str(cfg), "--json").stdout)["pid"]
        assert _replica_pids(pid) == []
    finally:
        docktor("daemon", "stop", "--config", str(cfg))
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert all(r["mode"] == "advisory" and r["executed"] is False and r["current_replicas"] == 0 for r in recs)
    assert all(r["decision"] == "scale_up" and r["target_replicas"] == 2 for r in recs)


def test_logs_follow_prints_new_decisions_as_json(tmp_path: Path) -> None:
    from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, rfc3339

    cfg = write_config(tmp_path, None)
    log = DecisionLog(tmp_path / ".docktor" / "decisions.jsonl")
    rec = DecisionRecord(ts=rfc3339(time.time()), service="worker", mode="autonomous", current_replicas=1,
                         decision="hold", target_replicas=1, reason="before", source="rules")
    log.write(rec)
    proc = subprocess.Popen([sys.executable, "-m", "docktor.agent.cli", "daemon", "logs", "--config", str(cfg), "-f", "--json"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["reason"] == "before"  # history first
        time.sleep(0.5)
        for i in range(3):
            log.write(rec.model_copy(update={"reason": f"after{i}"}))
        assert [json.loads(proc.stdout.readline())["reason"] for _ in range(3)] == ["after0", "after1", "after2"]
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()


def test_validate_checks_the_llm_endpoint_without_printing_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, None)
    cfg.write_text("llm: {provider: openai-compatible, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: DOCKTOR_TEST_KEY}\n"
                   + cfg.read_text())
    env = {k: v for k, v in os.environ.items() if k != "DOCKTOR_TEST_KEY"}
    r = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "validate", "--config", str(cfg)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: llm.api_key_env: environment variable DOCKTOR_TEST_KEY is not set"
    r = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "validate", "--config", str(cfg)], capture_output=True,
                       text=True, env={**env, "DOCKTOR_TEST_KEY": "sk-secret-123"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "llm: openai-compatible model m at http://127.0.0.1:9/v1" in r.stdout
    assert "sk-secret-123" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["decide", "--bogus"], "--bogus"),
        (["demo", "--duration", "5"], "--duration"),
        (["demo", "--duration", "soon"], "--duration"),
        (["simulate"], "trace"),
        (["daemon", "frobnicate"], "frobnicate"),
    ],
)
def test_usage_errors_are_one_line_naming_the_argument(args: list[str], names: str) -> None:
    r = docktor(*args)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and names in line


def test_decide_once_reads_twice_so_the_docktor_policy_sees_rates(tmp_path: Path, nats_server: NatsServer) -> None:
    """What users run (`decide --once --dry-run`) answers what the daemon would: rates are known."""
    import asyncio
    import threading

    asyncio.run(make_stream(nats_server.url, 300))
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(f"""
services:
  - name: worker
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    max_replicas: 20
    check_interval: 10s
    processing_time: 0.5s
    queue: {{kind: nats, url: "{nats_server.url}", stream: JOBS, consumer: WORKERS, timeout: 2s}}
""")
    stop = threading.Event()

    def produce() -> None:  # about 40 messages a second for as long as the command runs
        async def run() -> None:
            import nats

            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            while not stop.is_set():
                await js.publish("jobs.x", b"m")
                await asyncio.sleep(0.025)
            await nc.close()

        asyncio.run(run())

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        once = docktor("decide", "--config", str(cfg), "--once", "--dry-run", "--json", "--window", "1.5s")
        single = docktor("decide", "--config", str(cfg), "--once", "--dry-run", "--json", "--window", "0")
    finally:
        stop.set()
        producer.join(30)
    assert once.returncode == 0, once.stderr
    rec = json.loads(once.stdout)
    assert rec["missing"] == [] and rec["observations"]["queue.rate_in"] > 5, rec
    assert rec["reason"].startswith("needs ") and rec["decision"] == "scale_up" and rec["target_replicas"] >= 1
    # one reading has no rates: what the daemon's first tick knows, no more
    rec = json.loads(single.stdout)
    assert rec["missing"] == ["queue.rate_in"] and "queue.rate_in" not in rec["observations"]
    bad = docktor("decide", "--config", str(cfg), "--once", "--window", "soon")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --window:")


def test_decide_once_says_what_the_policy_wants_apart_from_this_tick(tmp_path: Path, nats_server: NatsServer) -> None:
    """A one-shot decision from 0 replicas: the policy wants 12 (1,200 queued, 100 per replica),
    the step limit lets 0 -> 4 happen this tick. Both are said, apart, in the table's output and
    in the record (``wanted``), as the RabbitMQ script it replaces printed the 12."""
    import asyncio

    asyncio.run(make_stream(nats_server.url, 1200))
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(f"""
services:
  - name: worker
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    max_replicas: 20
    policy: target
    target_per_replica: 100
    queue: {{kind: nats, url: "{nats_server.url}", stream: JOBS, consumer: WORKERS, timeout: 2s}}
""")
    r = docktor("decide", "--config", str(cfg), "--once", "--dry-run", "--json", "--window", "0")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert (rec["current_replicas"], rec["wanted"], rec["target_replicas"]) == (0, 12, 4), rec
    assert rec["guardrails"] == [{"name": "step_limit", "from": 12, "to": 4}]
    table = docktor("decide", "--config", str(cfg), "--once", "--dry-run", "--window", "0")
    assert table.returncode == 0, table.stderr
    assert "worker: wants 12; this tick 0 -> 4, limited by the step limit (dry-run: not executed)" in table.stdout.splitlines()
    assert "wants 12: " in table.stdout  # the reason column leads with it too
    explained = docktor("explain", "--service", "worker", "--config", str(cfg), "-n", "1")
    assert explained.returncode == 0, explained.stderr
    assert "  wants      12; this tick 0 -> 4, limited by the step limit" in explained.stdout.splitlines(), explained.stdout
