"""A daemon killed hard (``kill -9``) and started again: no orphan, no duplicate replica, no lost count.

The headline test runs the real ``docktor daemon`` twice on one config. The others kill a small
daemon-like program that drives the executor (``OWNER``) and let a fresh executor in the test find
what it left: adopted replicas, replicas being stopped, a replica that died while no daemon ran
(and the processes it had started), a replica nobody recorded, and a config that changed.

Every replica here writes ``ready-<replica>-<pid>`` (its pid and its child's) and appends to
``starts-<replica>`` at each start; processes are found through ``/proc`` by the test itself, by
the unique ``DOCKTOR_SERVICE`` each test uses, never through the executor under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.sdk import Context, ExecutorError
from tests.support.waiting import eventually, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="adoption reads /proc (Linux)"),
]

DOCKTOR = Path(sys.executable).with_name("docktor")

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


# --------------------------------------------------------------------------- records and pids another user could have planted
#
# A state folder another user could write (a shared one, one under /tmp) lets that user forge
# local/<service>.json: "replica 1 is pid N, being stopped". The executor must never signal a
# process because a file says so: the record must be this user's and private, and the process it
# names must run as this user and carry the service's DOCKTOR_OWNER marker.

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second user (nobody) must own the forged files and processes: needs root")


def bystander(*, as_user: int | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """An unrelated long-lived process (a ``sleep`` in a session of its own), optionally another user's."""
    become = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups"] if as_user is not None else []
    proc = subprocess.Popen([*become, "sleep", "1000"], env=env, start_new_session=True)
    if as_user is not None:  # setpriv changes user, then becomes `sleep`: wait until it has
        wait_until("the bystander to run as its user", lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep", timeout=30.0)
    return proc


def forged_record(scene: Scene, ex: LocalExecutor, pid: int, *, stopping: bool, ticks: int | None = None) -> bytes:
    """What a forger writes: the executor's own format, naming ``pid`` as replica 1 (identity right)."""
    fields = stat(pid)
    assert fields is not None
    return json.dumps({
        "version": 1, "service": scene.service, "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "spec": ex.spec, "daemon_pid": 1, "desired": 0,
        "replicas": [{"slot": 1, "pid": pid, "start_ticks": int(fields[19]) if ticks is None else ticks, "stopping": stopping}],
    }).encode()


def plant(scene: Scene, how: str, content: bytes) -> Path:
    """The forged record in ``<state>/local/``, put there as ``how`` says."""
    local = scene.base / "state" / "local"
    local.mkdir(parents=True)
    record = local / f"{scene.service}.json"
    if how == "a link":
        elsewhere = scene.base / "elsewhere.json"
        elsewhere.write_bytes(content)
        elsewhere.chmod(0o600)
        record.symlink_to(elsewhere)
        return record
    record.write_bytes(content)
    record.chmod(0o600)
    if how == "owned by nobody":
        os.chown(record, NOBODY, NOBODY)
    elif how == "writable by others":
        record.chmod(0o666)
    elif how == "in a folder nobody owns":
        local.chmod(0o755)
        os.chown(local, NOBODY, NOBODY)
    elif how == "in a state folder nobody owns":
        for d in (local, local.parent):
            d.chmod(0o755)
            os.chown(d, NOBODY, NOBODY)
    return record


@pytest.mark.parametrize(("how", "said"), [
    pytest.param("owned by nobody", "is owned by nobody (uid 65534)", marks=as_root),
    pytest.param("writable by others", "is writable by group and others"),
    pytest.param("a link", "is a symbolic link"),
    pytest.param("in a folder nobody owns", "is owned by nobody (uid 65534)", marks=as_root),
    pytest.param("in a state folder nobody owns", "is owned by nobody (uid 65534)", marks=as_root),
])
async def test_a_record_another_user_could_have_written_is_refused_and_acted_on_never(scene: Scene, how: str, said: str) -> None:
    victim = bystander()  # a process of ours the forged record says is a replica being stopped
    try:
        ex = scene.executor()
        plant(scene, how, forged_record(scene, ex, victim.pid, stopping=True))
        try:
            with pytest.raises(ExecutorError) as refused:
                await ex.status()
            outcome = await ex.scale(1)
        finally:
            await ex.close()  # waits for any stop it started: a signalled victim is dead by now
        assert said in str(refused.value) and "\n" not in str(refused.value)
        assert not outcome.ok and said in outcome.message
        assert victim.poll() is None, "the executor signalled the process a forged record named"
        assert replicas_of(scene.service) == []
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.parametrize(("who", "stopping"), [
    pytest.param("a process of ours without the marker", True),
    pytest.param("a process of ours without the marker", False),
    pytest.param("another user's process carrying the marker", True, marks=as_root),
    pytest.param("another user's process carrying the marker", False, marks=as_root),
])
async def test_a_recorded_pid_is_signalled_only_if_it_is_ours_and_carries_the_marker(scene: Scene, who: str, stopping: bool) -> None:
    ex = scene.executor()
    if who.startswith("another user's"):
        victim = bystander(as_user=NOBODY, env={**os.environ, "DOCKTOR_OWNER": ex.owner})
        why = "runs as nobody (uid 65534)"
    else:
        victim = bystander()
        why = "does not carry this service's DOCKTOR_OWNER marker"
    try:
        # a record with this user's own modes: only the process it names is foreign
        local = scene.base / "state" / "local"
        local.mkdir(parents=True, mode=0o700)
        (local / f"{scene.service}.json").write_bytes(forged_record(scene, ex, victim.pid, stopping=stopping))
        (local / f"{scene.service}.json").chmod(0o600)
        try:
            first, second = await ex.status(), await ex.status()
        finally:
            await ex.close()
        assert (first.desired, first.running, second.running) == (0, 0, 0)  # not adopted either
        assert victim.poll() is None, "the executor signalled a process that is not a replica"
        log = (scene.base / "state" / "logs" / f"{scene.service}.1.log").read_text()
        assert log.count(f"not signalling pid {victim.pid}") == 1, log
        assert why in log
    finally:
        victim.kill()
        victim.wait()


async def test_a_recorded_replica_gone_leaves_alone_a_session_that_is_not_ours(scene: Scene) -> None:
    # pid P is dead but its session lives on in a `sleep` it left (not a replica: no marker); a
    # record naming P as a replica that died makes the executor stop "what P left behind"
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen(['sleep', '1000']).pid)"],
        stdout=subprocess.PIPE, start_new_session=True,
    )
    assert leader.stdout is not None
    orphan = int(leader.stdout.readline())
    leader.wait()
    try:
        ex = scene.executor()
        local = scene.base / "state" / "local"
        local.mkdir(parents=True, mode=0o700)
        forged = json.loads(forged_record(scene, ex, orphan, stopping=False))
        forged["replicas"][0].update(pid=leader.pid, start_ticks=1)  # a replica that has died
        (local / f"{scene.service}.json").write_text(json.dumps(forged))
        (local / f"{scene.service}.json").chmod(0o600)
        try:
            await ex.status()
        finally:
            await ex.close()
        assert alive(orphan), "the executor signalled a session that is not a replica's"
        log = (scene.base / "state" / "logs" / f"{scene.service}.1.log").read_text()
        assert log.count(f"not signalling pid {orphan}") == 1, log
    finally:
        os.kill(orphan, signal.SIGKILL)


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
