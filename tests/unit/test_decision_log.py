"""The JSONL decision log: whole lines, rotation, filters, follow, and no torn line after a crash."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, LogWriteError, Outcome, OutcomeRecord, rfc3339
from docktor.agent.runtime.log_reader import follow, log_files, read_records
from tests.support.peers import SmallDisk


def record(service: str = "w", ts: float = 1_700_000_000.0, reason: str = "r", **extra: object) -> DecisionRecord:
    fields: dict[str, Any] = {"current_replicas": 1, "decision": "hold", "target_replicas": 1, **extra}
    return DecisionRecord(ts=rfc3339(ts), service=service, mode="autonomous", reason=reason, source="rules", **fields)


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
        # empty is whole too: a kill right after a rotation leaves the new file empty
        assert data == b"" or data.endswith(b"\n"), f"{f.name} ends mid-line"
        for line in data.splitlines():
            json.loads(line)
            total += 1
    assert total > 50


# --------------------------------------------------------------------------- a full disk, for real


# ``disk`` (tests/conftest.py): a real tmpfs; its size does not matter here, ``leave`` fills it
# and gives back only the bytes a test asks for.


def whole_lines(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends mid-line: {data[-60:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_line(disk: SmallDisk) -> None:
    """A real tmpfs with room for part of a record: the short write is cut back, the error raised."""
    path = disk.path / "d.jsonl"
    log = DecisionLog(path)
    log.write(record(reason="before"))
    size = path.stat().st_size
    disk.leave(4096)  # a page free (plus the log's own slack): less than the record below
    big = record(reason="x" * 20000)
    with pytest.raises(LogWriteError) as failed:
        log.write(big)
    assert failed.value.errno == errno.ENOSPC
    assert path.stat().st_size == size
    assert [r["reason"] for r in whole_lines(path)] == ["before"]

    # smaller records fit until the space is gone; each one is whole or absent
    written = 1
    while True:
        try:
            log.write(record(reason=f"small {written}"))
        except LogWriteError:
            break
        written += 1
    assert len(whole_lines(path)) == written

    disk.free()
    log.write(big)  # space is back: the same log object writes again
    log.close()
    lines = whole_lines(path)
    assert len(lines) == written + 1 and lines[-1]["reason"] == big.reason


def test_a_full_disk_at_rotation_leaves_whole_files(disk: SmallDisk) -> None:
    path = disk.path / "d.jsonl"
    log = DecisionLog(path, max_bytes=4096, backups=3)
    disk.leave(3 * 4096)
    n = 0
    with pytest.raises(LogWriteError):
        while True:
            log.write(record(reason=f"n{n}" + "y" * 300))
            n += 1
    for f in log_files(path):
        whole_lines(f)
    assert [r["reason"][: len(f"n{i}")] for i, r in enumerate(read_records(path))][-1] == f"n{n - 1}"


def test_rotation_lists_the_directory_once_not_every_configured_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 backups configured, three in use: rotating never asks about the 9,997 absent ones."""
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=4096, backups=10_000)
    asked: list[str] = []
    real_exists, real_stat = Path.exists, Path.stat

    def counting_exists(self: Path, *a: Any, **k: Any) -> bool:
        asked.append(self.name)
        return real_exists(self, *a, **k)

    def counting_stat(self: Path, *a: Any, **k: Any) -> Any:
        asked.append(self.name)
        return real_stat(self, *a, **k)

    monkeypatch.setattr(Path, "exists", counting_exists)
    monkeypatch.setattr(Path, "stat", counting_stat)
    for i in range(60):
        log.write(record(reason=f"n{i}" + "z" * 200))
    log.close()
    monkeypatch.undo()
    rotations = len(log_files(path)) - 1
    assert rotations >= 3
    assert len(asked) <= rotations, asked[:20]
    assert [r["reason"].rstrip("z") for r in read_records(path)] == [f"n{i}" for i in range(60)]


# --------------------------------------------------------------------------- intent and outcome


def test_an_intent_and_its_outcome_read_as_one_decision(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path)
    log.write(record("a", reason="acting", id="i1", phase="intent", decision="scale_up", target_replicas=3))
    log.write(record("b", reason="b holds", id="i2"))  # another service's line in between
    log.write(OutcomeRecord(ts=rfc3339(1_700_000_001.0), service="a", id="i1",
                            outcome=Outcome(status="ok", message="3 running", duration_ms=12.0)))
    log.write(record("a", reason="crashed while acting", id="i3", phase="intent", decision="scale_up", target_replicas=4))
    log.close()
    assert len(path.read_text().splitlines()) == 4
    first, second, third = read_records(path)
    assert (first["id"], first["reason"], first["executed"], first["outcome"]["status"]) == ("i1", "acting", True, "ok")
    assert "phase" not in first and first["target_replicas"] == 3
    assert second["reason"] == "b holds" and second["executed"] is False
    # the daemon died between intent and outcome: executed as far as anyone knows, outcome unknown
    assert third["executed"] is True and third["outcome"]["status"] == "unknown"
    assert [r["id"] for r in read_records(path, service="a")] == ["i1", "i3"]


def test_an_outcome_rotated_apart_from_its_intent_still_joins_it(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=4096, backups=5)
    for i in range(12):
        log.write(record(reason=f"pad{i}" + "p" * 250))
    log.write(record(reason="acting", id="x", phase="intent"))
    for i in range(3):
        log.write(record(reason=f"more{i}" + "p" * 300))
    log.write(OutcomeRecord(ts=rfc3339(1_700_000_002.0), service="w", id="x",
                            outcome=Outcome(status="error", message="no", duration_ms=1.0)))
    log.close()
    assert len(log_files(path)) >= 2
    merged = [r for r in read_records(path) if r.get("id") == "x"]
    assert len(merged) == 1 and merged[0]["outcome"]["status"] == "error"


def test_follow_shows_a_decision_once_its_outcome_is_written(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path)
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def reader() -> None:
        for rec in follow(path, poll=0.01, stop=done.is_set, from_start=True):
            seen.append(rec)
            if len(seen) == 2:
                done.set()

    t = threading.Thread(target=reader)
    t.start()
    log.write(record(reason="acting", id="y", phase="intent"))
    log.write(record(reason="later hold", id="z"))
    log.write(OutcomeRecord(ts=rfc3339(1_700_000_003.0), service="w", id="y",
                            outcome=Outcome(status="ok", message="ok", duration_ms=3.0)))
    t.join(10)
    done.set()
    log.close()
    assert [(r["reason"], r["executed"]) for r in seen] == [("acting", True), ("later hold", False)]


@pytest.mark.parametrize("tail", [b'{"ts": "2026-12-07T03:00:00.000Z", "service": "w", "decisi', b"\x00\x00\x00\x00", b"garbage with no newline"])
def test_a_torn_last_line_is_cut_at_open_and_set_aside(tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A file ending in a torn line (a power cut mid-write): today the next record was glued onto
    it and both were lost to every reader."""
    path = tmp_path / "decisions.jsonl"
    first = DecisionLog(path)
    first.write(record(reason="whole"))
    first.close()
    with path.open("ab") as f:
        f.write(tail)
    caplog.set_level("WARNING", "docktor")
    again = DecisionLog(path)
    again.write(record(reason="after"))
    again.close()
    assert [r["reason"] for r in read_records(path)] == ["whole", "after"]
    assert path.read_bytes().count(b"\n") == 2 and path.read_bytes().endswith(b"\n")
    assert (tmp_path / "decisions.jsonl.torn").read_bytes() == tail + b"\n"
    assert (tmp_path / "decisions.jsonl.torn").stat().st_mode & 0o777 == 0o600
    assert again.repaired == (f"{path}: its last {len(tail)} bytes were a torn line (a crash or a full disk mid-write), "
                              f"cut at open; set aside in {tmp_path / 'decisions.jsonl.torn'}")
    assert again.repaired in caplog.messages


def test_the_log_and_its_folder_are_private(tmp_path: Path) -> None:
    """Decisions name queues, observations and command lines: 0600 in a 0700 folder, and an older
    log that others could read is tightened when opened (the folder, which may be one the user
    chose for more than Docktor, is never chmod'ed)."""
    folder = tmp_path / "state"
    log = DecisionLog(folder / "decisions.jsonl")
    log.write(record())
    log.close()
    assert (folder.stat().st_mode & 0o777, (folder / "decisions.jsonl").stat().st_mode & 0o777) == (0o700, 0o600)
    (folder / "decisions.jsonl").chmod(0o644)
    folder.chmod(0o755)
    DecisionLog(folder / "decisions.jsonl").close()
    assert (folder.stat().st_mode & 0o777, (folder / "decisions.jsonl").stat().st_mode & 0o777) == (0o755, 0o600)
