"""What a restarted local executor finds that another user could have planted: a forged
``local/<service>.json`` (another user's, writable by others, a link, in a folder another user
owns) is refused and acted on never, and a recorded pid is signalled only if it is ours and carries
the service's marker. Processes are found through ``/proc`` by the test itself
(tests/support/adoption_scene.py), never through the executor under test.

A daemon killed hard and restarted: test_local_adoption_restart.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from docktor.tools.executors.local import LocalExecutor
from docktor.tools.sdk import ExecutorError
from tests.support.adoption_scene import *  # noqa: F403  (fixtures, found by name: scene)
from tests.support.adoption_scene import Scene, alive, replicas_of, stat
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="adoption reads /proc (Linux)"),
]


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
