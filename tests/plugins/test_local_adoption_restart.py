"""A daemon killed hard (``kill -9``) and started again: no orphan, no duplicate replica, no lost count.

The headline test runs the real ``docktor daemon`` twice on one config. The others kill a small
daemon-like program that drives the executor (``OWNER``, tests/support/adoption_scene.py) and let a
fresh executor in the test find what it left: adopted replicas, replicas being stopped, a replica
that died while no daemon ran (and the processes it had started), a replica nobody recorded, a
config that changed, a second executor for the same service, and an adopted replica's ``setsid``
child.

Records and pids another user could have planted: test_local_adoption_forgeries.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.sdk import ExecutorError
from tests.support.adoption_scene import *  # noqa: F403  (fixtures, found by name: scene)
from tests.support.adoption_scene import Scene, alive, replicas_of, stat
from tests.support.waiting import eventually, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="adoption reads /proc (Linux)"),
]


DOCKTOR = Path(sys.executable).with_name("docktor")


def readies(out: Path) -> dict[int, tuple[int, int]]:
    """replica pid -> (replica number, child pid), from the files the replicas wrote."""
    found = {}
    for f in out.glob("ready-*-*"):
        _, r, pid = f.name.split("-")
        found[int(pid)] = (int(r), int(f.read_text().split()[1]))
    return found


def starts(out: Path, replica: int) -> int:
    f = out / f"starts-{replica}"
    return len(f.read_text().split()) if f.exists() else 0


# --------------------------------------------------------------------------- the real daemon


def test_daemon_killed_hard_and_restarted_adopts_its_replicas_no_orphan_no_duplicate(scene: Scene) -> None:
    config = scene.base / "docktor.yaml"
    config.write_text(textwrap.dedent(f"""
        state_dir: {scene.base / 'state'}
        services:
          - name: {scene.service}
            executor: local
            command: {json.dumps(scene.command)}
            stop_grace_period: 5s
            min_replicas: 3
            max_replicas: 5
            check_interval: 0.5s
            policy: rules
        """))
    decisions = scene.base / "state" / "decisions.jsonl"

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(DOCKTOR), "daemon", "start", "--config", str(config), "--foreground"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        scene.owners.append(proc)
        return proc

    def records() -> list[dict[str, Any]]:
        return [json.loads(x) for x in decisions.read_text().splitlines()] if decisions.exists() else []

    first = start()
    wait_until("three replicas", lambda: len(readies(scene.out)) == 3, timeout=30.0)
    before = readies(scene.out)
    scene.kill9(first)

    # the replicas (and what they started) outlive the daemon: nothing in flight is cut off
    assert all(alive(pid) and alive(child) for pid, (_, child) in before.items())
    seen = len(records())
    second = start()
    wait_until("the restarted daemon to decide", lambda: len(records()) >= seen + 3, timeout=30.0)
    after = records()[seen:]

    assert sorted(readies(scene.out)) == sorted(before), "a replica was started again"
    assert replicas_of(scene.service) == sorted(before)
    assert [starts(scene.out, r) for r in (1, 2, 3)] == [1, 1, 1]
    assert after[0]["current_replicas"] == 3 and all(r["decision"] == "hold" for r in after)
    assert all(r["observations"]["replicas.running"] == 3 for r in after)

    done = subprocess.run([str(DOCKTOR), "daemon", "stop", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    second.wait(30)
    wait_until("every replica and its child to be gone", lambda: not any(
        alive(p) or alive(child) for p, (_, child) in before.items()), timeout=30.0)
    assert replicas_of(scene.service) == []
    state = json.loads((scene.base / "state" / "local" / f"{scene.service}.json").read_text())
    assert (state["desired"], state["replicas"]) == (0, [])


# --------------------------------------------------------------------------- what a fresh executor finds


async def test_replica_that_died_while_no_daemon_ran_is_started_again_and_its_child_stopped(scene: Scene) -> None:
    owner = scene.owner(3)
    before = readies(scene.out)
    scene.kill9(owner)
    (victim, (victim_replica, victim_child)) = next((p, v) for p, v in before.items() if v[0] == 2)
    os.kill(victim, signal.SIGKILL)  # replica 2 dies with no daemon to see it; its child lives on
    await eventually("replica 2 to be gone", lambda: not alive(victim), timeout=30.0)
    assert alive(victim_child)

    ex = scene.executor()
    try:
        status = await ex.status()
        await eventually("replica 2 to be running again", lambda: len(readies(scene.out)) == 4, timeout=30.0)
        status = await ex.status()
        await eventually("the dead replica's child to be stopped", lambda: not alive(victim_child), timeout=30.0)
    finally:
        await ex.close()

    assert (status.desired, status.running) == (3, 3)
    assert [starts(scene.out, r) for r in (1, 2, 3)] == [1, 2, 1]
    assert replicas_of(scene.service) == []
    log = (scene.base / "state" / "logs" / f"{scene.service}.2.log").read_text()
    assert "is gone, but processes it started remain: stopping them" in log


async def test_replicas_being_stopped_when_the_daemon_died_are_stopped_not_adopted(scene: Scene) -> None:
    owner = scene.owner(3, grace=30.0, then=1)  # killed in the middle of 3 -> 1
    scene.kill9(owner)
    before = readies(scene.out)

    ex = scene.executor()
    try:
        status = await ex.status()
        await eventually("only one replica to be left", lambda: len(replicas_of(scene.service)) == 1, timeout=30.0)
    finally:
        await ex.close()

    assert (status.desired, status.running) == (1, 1)
    assert [starts(scene.out, r) for r in (1, 2, 3)] == [1, 1, 1]
    assert all(not alive(p) and not alive(child) for p, (_, child) in before.items())


async def test_a_replica_nobody_recorded_is_found_by_its_marker_and_stopped(scene: Scene) -> None:
    owner = scene.owner(2)
    scene.kill9(owner)
    state_file = scene.base / "state" / "local" / f"{scene.service}.json"
    state = json.loads(state_file.read_text())
    lost = next(r for r in state["replicas"] if r["slot"] == 2)
    state["replicas"].remove(lost)  # as if the daemon died between starting replica 2 and recording it
    state["desired"] = 1
    state_file.write_text(json.dumps(state))

    ex = scene.executor()
    try:
        status = await ex.status()
        await eventually("the unrecorded replica to be stopped", lambda: not alive(lost["pid"]), timeout=30.0)
    finally:
        await ex.close()

    assert (status.desired, status.running) == (1, 1)
    assert starts(scene.out, 2) == 1  # stopped, not started again
    assert replicas_of(scene.service) == []


async def test_replicas_of_a_changed_command_are_replaced_at_the_same_count(scene: Scene) -> None:
    owner = scene.owner(2, command=[*scene.command, "old-flag"])
    scene.kill9(owner)
    old = readies(scene.out)

    ex = scene.executor()
    try:
        await ex.status()  # stops the old ones; starts their slots again with the new command
        await eventually("two new replicas", lambda: len(set(readies(scene.out)) - set(old)) == 2, timeout=30.0)
        await eventually("the old replicas to be gone", lambda: not any(alive(p) for p in old), timeout=30.0)
        status = await ex.status()
    finally:
        await ex.close()

    assert (status.desired, status.running) == (2, 2)
    assert replicas_of(scene.service) == []


async def test_a_second_executor_for_the_same_service_refuses_while_the_first_runs(scene: Scene) -> None:
    first, second = scene.executor(), scene.executor()
    try:
        assert (await first.scale(1)).ok
        with pytest.raises(ExecutorError, match="another Docktor process runs the local replicas"):
            await second.status()
        refused = await second.scale(3)
        assert not refused.ok and "another Docktor process" in refused.message
        assert len(replicas_of(scene.service)) == 1
    finally:
        await second.close()
        await first.close()
    assert replicas_of(scene.service) == []


# A replica whose child leaves its session (``setsid``): adopted with its replica, not taken for a
# replica nobody recorded, and stopped with it.
ESCAPER = r"""
import os, subprocess, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
r = os.environ["DOCKTOR_REPLICA"]
child = subprocess.Popen(["setsid", "sleep", "1000"])
tmp = out / f"ready-{r}.tmp"
tmp.write_text(f"{os.getpid()} {child.pid}")
os.replace(tmp, out / f"ready-{r}-{os.getpid()}")
while True:
    time.sleep(0.1)
"""


async def test_an_adopted_replicas_setsid_child_is_kept_with_it_and_stopped_with_it(scene: Scene) -> None:
    scene.command = [sys.executable, "-c", ESCAPER, str(scene.out)]
    owner = scene.owner(1)
    [(replica, (_, escaped))] = readies(scene.out).items()
    assert int(stat(escaped)[3]) == escaped  # type: ignore[index]  # its own session: out of the replica's
    scene.kill9(owner)

    ex = scene.executor()
    try:
        status = await ex.status()
        assert (status.desired, status.running) == (1, 1)
        # decided at adoption, before status() returns: a stop would be on its way now
        service_log = scene.base / "state" / "logs" / f"{scene.service}.log"
        assert not service_log.exists() or "no record lists" not in service_log.read_text()
        assert alive(replica) and alive(escaped), "the adopted replica's child was taken for an unrecorded replica"
    finally:
        await ex.close()
    await eventually("the replica and its setsid child to be gone", lambda: not alive(replica) and not alive(escaped), timeout=30.0)
