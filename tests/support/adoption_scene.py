"""What the adoption tests share (tests/plugins/test_local_adoption_restart.py and
test_local_adoption_forgeries.py): a replica with a child of its own (``REPLICA``), a small
daemon-like owner of the executor (``OWNER``) to kill hard, ``/proc`` read by the test, and the
``scene`` fixture that always stops what a test started.

Every replica here writes ``ready-<replica>-<pid>`` (its pid and its child's) and appends to
``starts-<replica>`` at each start; processes are found through ``/proc`` by the unique
``DOCKTOR_SERVICE`` each test uses, never through the executor under test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.sdk import Context

__all__ = ["scene"]  # the fixtures: a test module takes them with `import *`


# A replica with a child of its own (a worker pool, a shell pipeline): both must be accounted for.
REPLICA = r"""
import os, signal, subprocess, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
r = os.environ["DOCKTOR_REPLICA"]
child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
def bye(*_):
    child.terminate(); child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
with open(out / ("starts-" + r), "a") as f:
    f.write(f"{os.getpid()}\n")
tmp = out / f"ready-{r}.tmp"
tmp.write_text(f"{os.getpid()} {child.pid}")
os.replace(tmp, out / f"ready-{r}-{os.getpid()}")
while True:
    time.sleep(0.1)
"""


# Drives the executor like the daemon does, then waits to be killed.
OWNER = r"""
import asyncio, json, sys, pathlib
from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.sdk import Context

async def main():
    base, service, n = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    settings = LocalSettings(kind="local", command=json.loads(sys.argv[4]), stop_grace_period=float(sys.argv[5]))
    ex = LocalExecutor(settings, Context(service, base, base / "state"))
    outcome = await ex.scale(n)
    print("scaled", outcome.ok, flush=True)
    if len(sys.argv) > 6:  # then scale in, and stay in the middle of it
        asyncio.create_task(ex.scale(int(sys.argv[6])))
        await asyncio.sleep(0.5)
        print("stopping", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


# --------------------------------------------------------------------------- /proc, read by the test


def stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def replicas_of(service: str) -> list[int]:
    """Live session leaders carrying DOCKTOR_SERVICE=<service>: the replicas, however started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = stat(pid)
        if fields is None or fields[0] in ("Z", "X") or int(fields[3]) != pid:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DOCKTOR_SERVICE={service}".encode() in env:
            found.append(pid)
    return sorted(found)


# --------------------------------------------------------------------------- fixtures


class Scene:
    def __init__(self, tmp_path: Path) -> None:
        self.base = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.service = f"w{uuid.uuid4().hex[:8]}"
        self.command = [sys.executable, "-c", REPLICA, str(self.out)]
        self.owners: list[subprocess.Popen[bytes]] = []

    def owner(self, n: int, grace: float = 5.0, then: int | None = None, command: list[str] | None = None) -> subprocess.Popen[bytes]:
        """A process that runs ``n`` replicas through the executor (then starts scaling to ``then``)."""
        args = [sys.executable, "-c", OWNER, str(self.base), self.service, str(n), json.dumps(command or self.command), str(grace)]
        proc = subprocess.Popen([*args, *([str(then)] if then is not None else [])], stdout=subprocess.PIPE)
        self.owners.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"scaled True"
        if then is not None:
            assert proc.stdout.readline().strip() == b"stopping"
        return proc

    def executor(self, **settings: Any) -> LocalExecutor:
        s = LocalSettings(kind="local", command=self.command, **{"stop_grace_period": 5.0, **settings})
        return LocalExecutor(s, Context(self.service, self.base, self.base / "state"), settle=0.2)

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def cleanup(self) -> None:
        for proc in self.owners:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for pid in replicas_of(self.service):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    s = Scene(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()
