"""The JSONL decision log: whole lines, rotation, filters, follow, and no torn line after a crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, follow, log_files, read_records, rfc3339


def record(service: str = "w", ts: float = 1_700_000_000.0, reason: str = "r", **extra: object) -> DecisionRecord:
    return DecisionRecord(ts=rfc3339(ts), service=service, mode="autonomous", current_replicas=1, decision="hold",
                          target_replicas=1, reason=reason, source="rules", **extra)  # type: ignore[arg-type]


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500Z"


def test_each_record_is_one_json_line(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    log.write(record(reason="queue.backlog 1500 > 500", observations={"queue.backlog": 1500.0}))
    log.write(record(service="other"))
    log.close()
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["reason"] == "queue.backlog 1500 > 500"
    assert first["observations"] == {"queue.backlog": 1500.0}
    assert {"ts", "service", "mode", "current_replicas", "decision", "target_replicas", "reason", "observations",
            "matched_rules", "guardrails", "source", "executed", "outcome"} <= first.keys()


def test_rotation_keeps_every_record_across_files(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=4096, backups=50)
    for i in range(200):
        log.write(record(reason=f"n{i}"))
    log.close()
    files = log_files(path)
    assert len(files) > 3
    assert all(f.stat().st_size <= 4096 for f in files)
    assert [r["reason"] for r in read_records(path)] == [f"n{i}" for i in range(200)]


def test_rotation_drops_the_oldest_beyond_backups(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=4096, backups=2)
    for i in range(200):
        log.write(record(reason=f"n{i}"))
    log.close()
    assert len(log_files(path)) == 3
    reasons = [r["reason"] for r in read_records(path)]
    assert reasons[-1] == "n199" and "n0" not in reasons
    assert reasons == sorted(reasons, key=lambda s: int(s[1:]))


def test_filters_by_service_and_time_and_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path)
    log.write(record("a", ts=1000))
    log.write(record("b", ts=2000))
    log.write(record("a", ts=3000))
    log.close()
    with path.open("ab") as f:
        f.write(b'{"ts": "2026-01-01T00:00:00Z", "serv')  # a torn tail, as after a power cut
    assert [r["ts"] for r in read_records(path, service="a")] == [rfc3339(1000), rfc3339(3000)]
    assert [r["service"] for r in read_records(path, since=1500)] == ["b", "a"]


def test_follow_sees_new_records_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=4096, backups=3)
    log.write(record(reason="old"))
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for rec in follow(path, poll=0.01, stop=done.is_set):
            seen.append(rec["reason"])
            if len(seen) == 60:
                done.set()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    for i in range(60):
        log.write(record(reason=f"new{i}"))
        time.sleep(0.005)
    t.join(10)
    done.set()
    log.close()
    assert seen == [f"new{i}" for i in range(60)]
    assert len(log_files(path)) > 1


WRITER = """
import sys
from pathlib import Path
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord
log = DecisionLog(Path(sys.argv[1]), max_bytes=64 * 1024, backups=100)
i = 0
while True:
    log.write(DecisionRecord(ts="2026-01-01T00:00:00.000Z", service="w", mode="autonomous", current_replicas=1,
              decision="hold", target_replicas=1, reason="x" * (i % 700), source="rules",
              observations={f"m{j}": float(j) for j in range(i % 40)}))
    i += 1
    if i == 50:
        print("ready", flush=True)
"""


def test_killing_the_writer_never_leaves_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    total = 0
    for f in log_files(path):
        data = f.read_bytes()
        assert data.endswith(b"\n"), f"{f.name} ends mid-line"
        for line in data.splitlines():
            json.loads(line)
            total += 1
    assert total > 50
