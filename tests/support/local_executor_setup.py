"""What the local executor's test modules share (tests/plugins/test_local_executor_scaling.py and
test_local_executor_isolation.py): ``WORKER``, a replica program that writes ``ready-<replica>``
into a folder once its SIGTERM handler is installed, ``term-<replica>`` when SIGTERM arrives, and
appends a line to ``starts-<replica>`` at every start; reading those files; liveness from /proc;
and an executor factory that always closes what it made."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.sdk import Context
from tests.support.waiting import eventually

__all__ = ["make", "out"]  # the fixtures: a test module takes them with `import *`


WORKER = r"""
import os, signal, sys, time, pathlib
out, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
r = os.environ["DOCKTOR_REPLICA"]

def put(name, text):
    tmp = out / (name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out / name)

def on_term(*_):
    put("term-" + r, "")
    if mode != "ignore-term":
        sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
starts = out / ("starts-" + r)
first = not starts.exists()
with open(starts, "a") as f:
    f.write("start\n")
print("out", r, flush=True)
print("err", r, file=sys.stderr, flush=True)
put("ready-" + r, " ".join([str(os.getpid()), os.environ["DOCKTOR_SERVICE"], os.getcwd(), os.environ.get("GREETING", "-")]))
if mode == "crash" or (mode == "crash-once" and first):
    time.sleep(0.3)
    sys.exit(1)
while True:
    time.sleep(0.05)
"""


def worker(out: Path, mode: str = "run") -> list[str]:
    return [sys.executable, "-c", WORKER, str(out), mode]


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process; a zombie nobody reaped yet counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: signal 0 succeeded, so assume it lives
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ready(out: Path, replica: int) -> list[str] | None:
    f = out / f"ready-{replica}"
    return f.read_text().split() if f.exists() else None


async def wait_ready(out: Path, *replicas: int) -> dict[int, list[str]]:
    found = {}
    for r in replicas:
        found[r] = await eventually(f"replica {r} to start", lambda r=r: ready(out, r), timeout=15.0)
    return found


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., LocalExecutor]]:
    """Builds executors and always closes them, so a failing test leaves no processes behind."""
    made: list[LocalExecutor] = []

    def build(command: list[str], stop_grace_period: float = 5.0, **kwargs: Any) -> LocalExecutor:
        kwargs.setdefault("settle", 0.2)
        settings = LocalSettings(kind="local", command=command, stop_grace_period=stop_grace_period)
        ex = LocalExecutor(settings, Context("worker", tmp_path, tmp_path / "state"), **kwargs)
        made.append(ex)
        return ex

    yield build
    for ex in made:
        await ex.close()
