"""The local executor scaling real child processes: small Python programs that report what they saw.

Scale up and down (the newest go first, the idlest first when CPU figures say so), SIGTERM and the
grace period, crashes and the restart backoff (on a scripted clock), commands that cannot run. Each
replica runs ``WORKER`` (tests/support/local_executor_setup.py). Nothing here asserts durations; only
outcomes and orderings.

What a replica gets and leaves behind: test_local_executor_isolation.py. A daemon killed hard and
restarted: test_local_adoption_restart.py and test_local_adoption_forgeries.py.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.executors import procfs
from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.executors.local_cpu import SCAN_REUSE_S
from docktor.tools.sdk import Context
from tests.support.local_executor_setup import *  # noqa: F403  (fixtures, found by name: make, out)
from tests.support.local_executor_setup import alive, wait_ready, worker
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


def starts(out: Path, replica: int) -> int:
    f = out / f"starts-{replica}"
    return len(f.read_text().splitlines()) if f.exists() else 0


async def test_scale_up_runs_replicas_with_their_index_env_cwd_and_logs(tmp_path: Path, out: Path) -> None:
    (tmp_path / "sub").mkdir()
    settings = LocalSettings(kind="local", command=worker(out), env={"GREETING": "hello"}, working_dir=Path("sub"))
    ex = LocalExecutor(settings, Context("worker", tmp_path, tmp_path / "state"))
    try:
        outcome = await ex.scale(3)
        assert outcome.ok, outcome.message
        assert outcome.running == 3
        seen = await wait_ready(out, 1, 2, 3)
        status = await ex.status()
    finally:
        await ex.close()

    assert (status.desired, status.running, status.failed, status.healthy) == (3, 3, 0, True)
    for r, (pid, service, cwd, greeting) in seen.items():
        assert service == "worker"
        assert Path(cwd) == tmp_path / "sub"
        assert greeting == "hello"
        log = (tmp_path / "state" / "logs" / f"worker.{r}.log").read_text()
        assert f"out {r}\n" in log and f"err {r}\n" in log
        assert f"started, pid {pid}" in log
    assert len({pid for pid, *_ in seen.values()}) == 3


async def test_scale_down_terminates_newest_replicas_and_keeps_the_first(make: Callable[..., LocalExecutor], out: Path) -> None:
    ex = make(worker(out))
    assert (await ex.scale(3)).ok
    pids = {r: int(v[0]) for r, v in (await wait_ready(out, 1, 2, 3)).items()}

    outcome = await ex.scale(1)

    assert outcome.ok, outcome.message
    assert "stopped 3, 2" in outcome.message
    assert outcome.running == 1
    assert (out / "term-3").exists() and (out / "term-2").exists()
    assert not (out / "term-1").exists()
    assert not alive(pids[3]) and not alive(pids[2])
    assert alive(pids[1])
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (1, 1, 0)


async def test_replica_ignoring_sigterm_is_killed_after_grace_and_all_stop_together(
    make: Callable[..., LocalExecutor], out: Path, tmp_path: Path
) -> None:
    ex = make(worker(out, "ignore-term"), stop_grace_period=0.3)
    assert (await ex.scale(3)).ok
    pids = [int(v[0]) for v in (await wait_ready(out, 1, 2, 3)).values()]

    outcome = await ex.scale(0)

    assert outcome.ok, outcome.message
    assert "SIGKILL" in outcome.message
    assert outcome.running == 0
    assert all((out / f"term-{r}").exists() for r in (1, 2, 3)), "each replica got SIGTERM first"
    assert not any(alive(pid) for pid in pids)
    # Concurrent, not one grace period after another: every SIGTERM went out before any SIGKILL.
    term_at, kill_at = [], []
    for r in (1, 2, 3):
        for line in (tmp_path / "state" / "logs" / f"worker.{r}.log").read_text().splitlines():
            if line.startswith("[docktor "):
                stamp = datetime.fromisoformat(line.split()[1].rstrip("]"))
                if "sending SIGTERM" in line:
                    term_at.append(stamp)
                elif "sending SIGKILL" in line:
                    kill_at.append(stamp)
    assert len(term_at) == 3 and len(kill_at) == 3
    assert max(term_at) <= min(kill_at)


async def test_crashing_replica_counts_as_failed_and_is_restarted_after_backoff(
    make: Callable[..., LocalExecutor], out: Path
) -> None:
    ex = make(worker(out, "crash"), settle=0.05)
    assert (await ex.scale(1)).ok

    async def crashed() -> Any:
        s = await ex.status()
        return s if s.failed == 1 and s.running == 0 else None

    status = await eventually("the crash to show in status", crashed, timeout=15.0)
    assert status.desired == 1
    assert "replica 1 exited with code 1" in status.detail
    assert "restart #1" in status.detail

    async def restarted() -> bool:
        await ex.status()  # status() is what reconciles
        return starts(out, 1) >= 2

    await eventually("the crashed replica to be restarted", restarted, timeout=15.0)


async def test_restart_backoff_doubles_per_crash_scripted_clock(make: Callable[..., LocalExecutor], out: Path) -> None:
    # Real processes crash for real; only the executor's clock is scripted, so the back-off can be
    # read exactly instead of waited for.
    now = [1000.0]
    ex = make(worker(out, "crash"), settle=0.05, clock=lambda: now[0])
    assert (await ex.scale(1)).ok

    for attempt, delay in ((1, 1), (2, 2), (3, 4)):

        async def down(attempt: int = attempt) -> Any:
            s = await ex.status()
            return s if s.running == 0 and f"restart #{attempt}" in s.detail else None

        status = await eventually(f"crash number {attempt}", down, timeout=15.0)
        assert f"restart #{attempt} in {delay} s" in status.detail
        assert status.failed == 1
        now[0] += delay - 0.5
        early = await ex.status()
        assert early.running == 0, "restarted before its back-off had passed"
        now[0] += 0.5
        assert (await ex.status()).running == 1
        await eventually(f"restart number {attempt}", lambda attempt=attempt: starts(out, 1) == attempt + 1, timeout=15.0)


async def test_replica_that_stays_up_after_restart_is_no_longer_failed_scripted_clock(
    make: Callable[..., LocalExecutor], out: Path
) -> None:
    now = [1000.0]
    ex = make(worker(out, "crash-once"), settle=0.05, clock=lambda: now[0])
    assert (await ex.scale(1)).ok

    async def down() -> Any:
        s = await ex.status()
        return s if s.running == 0 and s.failed == 1 else None

    await eventually("the first crash", down, timeout=15.0)
    now[0] += 1
    status = await ex.status()
    assert (status.running, status.failed) == (1, 1)
    assert "restarted" in status.detail
    now[0] += 10
    status = await ex.status()
    assert (status.running, status.failed, status.detail) == (1, 0, "")


async def test_missing_command_gives_failed_outcome_naming_it(make: Callable[..., LocalExecutor]) -> None:
    ex = make(["docktor-no-such-command-xyz", "--flag"])

    outcome = await ex.scale(2)

    assert not outcome.ok
    assert "command not found: docktor-no-such-command-xyz" in outcome.message
    assert outcome.running == 0
    status = await ex.status()
    assert (status.desired, status.running, status.failed, status.healthy) == (2, 0, 2, False)
    assert "docktor-no-such-command-xyz" in status.detail


async def test_non_executable_command_gives_failed_outcome(make: Callable[..., LocalExecutor], tmp_path: Path) -> None:
    script = tmp_path / "worker.sh"
    script.write_text("#!/bin/sh\nsleep 60\n")
    script.chmod(0o644)
    ex = make([str(script)])

    outcome = await ex.scale(1)

    assert not outcome.ok
    assert "permission denied" in outcome.message and str(script) in outcome.message


async def test_immediately_exiting_command_gives_failed_outcome(make: Callable[..., LocalExecutor]) -> None:
    false = shutil.which("false")
    assert false, "coreutils 'false' not on PATH"
    ex = make([false], settle=0.5)

    outcome = await ex.scale(1)

    assert not outcome.ok
    assert "replica 1 exited with code 1 right after start" in outcome.message
    assert outcome.running == 0
    status = await ex.status()
    assert (status.running, status.failed) == (0, 1)


async def test_scale_to_zero_and_negative(make: Callable[..., LocalExecutor], out: Path) -> None:
    ex = make(worker(out))
    assert (await ex.scale(2)).ok
    pids = [int(v[0]) for v in (await wait_ready(out, 1, 2)).values()]

    assert not (await ex.scale(-1)).ok
    outcome = await ex.scale(0)

    assert outcome.ok and outcome.running == 0
    assert not any(alive(pid) for pid in pids)
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (0, 0, 0)


# --------------------------------------------------------------------------- which replicas go first

BUSY_OR_IDLE = r"""
import os, pathlib, signal, sys, time
out, busy = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
r = os.environ["DOCKTOR_REPLICA"]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
(out / ("ready-" + r)).write_text(str(os.getpid()))
while True:
    if r in busy:
        sum(i * i for i in range(10000))  # a replica with work in hand
    else:
        time.sleep(0.05)                  # an idle one, waiting for work
"""


async def test_scale_in_removes_the_idlest_replicas_and_says_why(make: Callable[..., LocalExecutor], out: Path) -> None:
    # replica 3 is busy: the highest number, which the executor used to remove first
    ex = make([sys.executable, "-c", BUSY_OR_IDLE, str(out), "3"])
    assert (await ex.scale(3)).ok
    await wait_ready(out, 1, 2, 3)
    # a scan of /proc up to SCAN_REUSE_S old serves a measurement (every service's executor
    # measures at the same instant); one made before the replicas started (by an earlier test in
    # this process) would see none of them, and they would stay unmeasured: wait it out
    await asyncio.sleep(SCAN_REUSE_S * 1.5)

    await ex.status()  # each status() is a CPU measurement, as each tick is
    await asyncio.sleep(1.2)  # a measurement covers at least a second
    await ex.status()

    outcome = await ex.scale(1)

    assert outcome.ok, outcome.message
    # the busy replica 3 is kept; the two idle ones go in the order of the rule
    # (scale_in.idlest_first: whole percent, ties to the higher number) over the figures measured:
    # an idle replica's 0.9 % and another's 1.1 % are different whole percents on a busy machine,
    # so which of them goes first is the measurement's, not fixed (the tie rule itself:
    # tests/unit/test_idlest_first.py)
    assert sorted(r.replica for r in outcome.removed) == ["1", "2"]
    assert all(r.why.startswith("lowest CPU: ") for r in outcome.removed)
    measured = [(int(float(r.why.split("lowest CPU: ")[1].split("%")[0])), -int(r.replica)) for r in outcome.removed]
    assert measured == sorted(measured)
    assert "3: " in outcome.removed[0].why  # the kept busy one is named with its CPU
    assert all("after SIGTERM" in r.stopped for r in outcome.removed)
    remaining = await ex.status()
    assert (remaining.desired, remaining.running) == (1, 1)
    assert alive(int((out / "ready-3").read_text()))
    assert not any(alive(int((out / f"ready-{r}").read_text())) for r in (1, 2))


def test_one_scan_of_proc_serves_the_measurements_made_within_its_age() -> None:
    # every service's executor measures at the same instants: one scan of /proc serves them all
    made, scan = procfs.recent_scan(60.0)
    assert procfs.recent_scan(60.0) == (made, scan)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # the shared scan predates the process, a fresh one (no age allowed) sees it
        assert procfs.by_session({sleeper.pid}, scan)[sleeper.pid] == []
        fresh_at, fresh = procfs.recent_scan(0.0)
        assert fresh_at > made
        assert [p.pid for p in procfs.by_session({sleeper.pid}, fresh)[sleeper.pid]] == [sleeper.pid]
        assert [p.pid for p in procfs.by_session({sleeper.pid})[sleeper.pid]] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()
