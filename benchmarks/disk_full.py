"""The decision log on a full disk, and rotation with many backups: figures.

    python -m benchmarks.disk_full [--baseline 35abe63] [--records 3000]

1. **Rotation.** Records written through ``DecisionLog`` with ``max_bytes`` at its minimum (4 KiB,
   a rotation every ~10 records), ``log.backups`` 5 and 10,000, now and at the baseline revision
   (its ``decision_log.py``, loaded from ``git show``), in lines per second.
2. **A full disk mid-run** (needs root to mount a 1 MiB tmpfs): a real daemon (nats-server, the
   local executor's child processes) scales on bursts with ``state_dir`` on the tmpfs; the tmpfs
   is filled, a burst arrives, and space is given back. Reported: what the daemon did while full,
   and that every line parses and every executor call is in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docktor.agent.config.load import parse_config
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord
from docktor.agent.runtime.log_reader import log_files, read_records
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.peers import NatsServer, SmallDisk

REPO = Path(__file__).resolve().parents[1]
BASELINE = "35abe63"


def old_log_class(revision: str, tmp: Path) -> Any:
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:agent/runtime/decision_log.py"],
                            capture_output=True, text=True, check=True).stdout
    path = tmp / "old_decision_log.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_decision_log", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_decision_log"] = module  # pydantic resolves the annotations through it
    spec.loader.exec_module(module)
    return module


def rotation_rate(log_cls: Any, record_cls: Any, tmp: Path, backups: int, records: int) -> float:
    folder = Path(tempfile.mkdtemp(dir=tmp))
    log = log_cls(folder / "decisions.jsonl", 4096, backups)
    rec = record_cls(ts="2026-01-01T00:00:00.000Z", service="w", mode="autonomous", current_replicas=1, decision="hold",
                     target_replicas=1, reason="x" * 200, source="rules")
    started = time.perf_counter()
    for _ in range(records):
        log.write(rec)
    elapsed = time.perf_counter() - started
    log.close()
    return records / elapsed


CONFIG = """
state_dir: {state}
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)", "docktor-bench-diskfull"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 8
    check_interval: 0.5
    policy: rules
    scale_up_by: 1
    cooldown_up: 0
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog_per_replica, op: ">", value: 50}}]
"""


async def full_disk_run(tmp: Path) -> list[str]:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    disk = SmallDisk(tmp / "state", 1024 * 1024)
    disk.path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1048576", "tmpfs", str(disk.path)], capture_output=True, text=True)
    if done.returncode != 0:
        return [f"skipped: cannot mount a tmpfs ({done.stderr.strip()}); run as root"]
    server = NatsServer.start(tmp / "js")
    lines: list[str] = []
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="JOBS", subjects=["jobs.>"]))
        await js.add_consumer("JOBS", ConsumerConfig(durable_name="WORKERS"))
        daemon = Supervisor(parse_config(CONFIG.format(state=disk.path, python=sys.executable, url=server.url), disk.path / "d.yaml", {}),
                        log_path=disk.path / "decisions.jsonl", status_path=disk.path / "status.json")
        await daemon.open()
        runner = daemon.loops["worker"]
        asked: list[int] = []
        real = runner.executor.scale

        async def scale(n: int) -> Any:
            asked.append(n)
            return await real(n)

        runner.executor.scale = scale  # type: ignore[method-assign]
        errors: list[str] = []

        class Count(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno >= logging.ERROR:
                    errors.append(record.getMessage())

        counter = Count()
        logging.getLogger("docktor").addHandler(counter)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))

        async def until(cond: Any, limit: float = 60) -> None:
            end = time.monotonic() + limit
            while not cond() and time.monotonic() < end:
                await asyncio.sleep(0.02)

        desired = lambda: runner.last_status.desired if runner.last_status else -1  # noqa: E731
        for _ in range(120):
            await js.publish("jobs.a", b"x")
        await until(lambda: desired() == 3)
        disk.fill()
        filled_at, ticks0 = time.monotonic(), runner.ticks
        for _ in range(200):
            await js.publish("jobs.a", b"x")
        await until(lambda: runner.ticks >= ticks0 + 10)
        held = desired()
        health = daemon.status()["decision_log"]
        status_file = json.loads((disk.path / "status.json").read_text())["decision_log"]["writable"]
        full_ticks = runner.ticks - ticks0
        disk.free()
        freed_at, before = time.monotonic(), health["unrecorded"]
        await until(lambda: daemon.recorder.writable)
        resumed = time.monotonic() - freed_at
        await until(lambda: desired() == 7)
        stop.set()
        await task
        await daemon.close()
        await nc.close()
        logging.getLogger("docktor").removeHandler(counter)
        records = list(read_records(disk.path / "decisions.jsonl"))
        torn = unparsed = 0
        for f in log_files(disk.path / "decisions.jsonl"):
            data = f.read_bytes()
            torn += int(bool(data) and not data.endswith(b"\n"))
            for line in data.splitlines():
                try:
                    json.loads(line)
                except ValueError:
                    unparsed += 1
        executed = [r["target_replicas"] for r in records if r["executed"]]
        lines += [
            f"full for {freed_at - filled_at:.1f} s ({full_ticks} ticks of 0.5 s): replicas held at {held} "
            f"(the rules wanted up to 7); {health['refused_actions']} scale-ups refused, {before} decisions kept in memory only; "
            f"error lines logged: {len(errors)}; status.json (rewritten in place) said writable={status_file}",
            f"space given back: writing resumed {resumed * 1000:.0f} ms later, at the next tick; scaled on to {desired()}",
            f"log: {len(records)} decisions, {sum(len(f.read_bytes().splitlines()) for f in log_files(disk.path / 'decisions.jsonl'))} lines, "
            f"{unparsed} unparsable, {torn} files ending mid-line; executor calls {asked} == executed in the log {executed}: "
            f"{asked == executed}",
        ]
    finally:
        server.stop()
        disk.umount()
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.disk_full", description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--records", type=int, default=3000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="docktor-diskfull-") as name:
        tmp = Path(name)
        old = old_log_class(args.baseline, tmp)
        print("rotation: records of ~450 bytes, max_bytes 4096 (a rotation every ~9 records), into a fresh folder")
        for backups, records in ((5, args.records), (10_000, args.records // 10), (10_000, args.records)):
            now = rotation_rate(DecisionLog, DecisionRecord, tmp, backups, records)
            before = rotation_rate(old.DecisionLog, old.DecisionRecord, tmp, backups, records)
            in_use = min(backups, records // 9)
            print(f"  backups {backups:>6} configured, ~{in_use:>3} in use at the end ({records:>5} records): "
                  f"now {now:8,.0f} lines/s   {args.baseline} {before:8,.0f} lines/s")
        print("a full state_dir mid-run (1 MiB tmpfs):")
        for line in asyncio.run(full_disk_run(tmp)):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
