"""A shared machine (issue 21): another local user must not steer what this user's Docktor writes,
reads or signals through its state folder. The attacker is a real second account (``nobody``),
through ``runuser``/``setpriv``; these tests need root to become it, and skip with the reason
otherwise (CI runs as root).

What OpenSSH's StrictModes and systemd do: a state folder (or a file in it) owned by another user
or writable by others is refused, one line, exit 2; folders are created 0700 and files 0600; no
file is opened through a symbolic link; ``daemon stop`` never signals a process of another user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import docktor

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None or shutil.which("setpriv") is None,
                                reason="needs root, runuser and setpriv to act as a second local user (nobody)")

CONFIG = """
state_dir: {state}
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 2
    check_interval: 0.5s
    policy: rules
    queue: {{kind: nats, url: "nats://127.0.0.1:9", stream: JOBS, consumer: WORKERS, timeout: 0.2s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 100}}]
"""


def as_nobody(*args: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A folder like /tmp: root's, sticky, writable by every user (pytest's own tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="docktor-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of root's that a planted link points at: it must come out unchanged."""
    path = tmp_path / "victim.conf"
    path.write_text("precious\n")
    return path


def config(tmp_path: Path, state: Path) -> Path:
    path = tmp_path / "docktor.yaml"
    path.write_text(CONFIG.format(state=state, python=sys.executable))
    return path


def test_a_state_dir_another_user_created_with_a_planted_link_is_refused(tmp_path: Path, public_tmp: Path, victim: Path) -> None:
    """nobody makes the state folder first, under a public /tmp, and plants docktor.pid -> a root
    file: the daemon (root) refuses the folder and writes nothing, instead of following the link."""
    state = public_tmp / "state"
    as_nobody("mkdir", str(state))
    as_nobody("ln", "-s", str(victim), str(state / "docktor.pid"))
    cfg = config(tmp_path, state)
    for command in (["daemon", "start"], ["daemon", "start", "--foreground"], ["decide", "--once", "--dry-run"], ["daemon", "stop"]):
        done = docktor(*command, "--config", str(cfg), timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"error: state_dir {state} is owned by nobody (uid {NOBODY}), not by root (uid 0) who runs docktor: refusing it "
            "(another user could have planted what is in it); remove it or choose another"
        ], command
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in state.iterdir()) == ["docktor.pid"]  # nothing of ours was written there


def test_a_state_dir_others_can_write_is_refused_and_a_readable_one_kept_with_private_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    cfg = config(tmp_path, state)
    done = docktor("decide", "--once", "--dry-run", "--window", "0", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: state_dir {state} is writable by group and others (mode 0777): refusing it; "
                                   "chmod 700 it if its content is yours")
    state.chmod(0o755)  # others can only list it (a folder the user chose is never chmod'ed)
    done = docktor("decide", "--once", "--dry-run", "--window", "0", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert state.stat().st_mode & 0o777 == 0o755
    assert (state / "decisions.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_link_in_the_state_dir_is_never_followed(tmp_path: Path, victim: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "docktor.lock").symlink_to(victim)
    cfg = config(tmp_path, state)
    done = docktor("daemon", "start", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {state / 'docktor.lock'} is a symbolic link: refusing to open it (remove it)"
    (state / "docktor.lock").unlink()
    (state / "daemon.log").symlink_to(victim)
    done = docktor("daemon", "start", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {state / 'daemon.log'} is a symbolic link: refusing to open it (remove it)"
    assert victim.read_text() == "precious\n"


def test_every_file_the_daemon_writes_is_private(tmp_path: Path) -> None:
    """Queue names, observations and command lines: 0600 files in 0700 folders, for every user."""
    state = tmp_path / "state"
    cfg = config(tmp_path, state)
    started = docktor("daemon", "start", "--config", str(cfg))
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 60
        while not ((state / "status.json").exists() and (state / "state" / "worker.json").exists()
                   and (state / "decisions.jsonl").exists()):
            assert time.monotonic() < deadline, sorted(str(p.relative_to(state)) for p in state.rglob("*"))
            time.sleep(0.1)
    finally:
        stopped = docktor("daemon", "stop", "--config", str(cfg))
        assert stopped.returncode == 0, stopped.stderr
    # while it ran: the pid file, daemon.json and the socket; after: what it keeps
    assert (state.stat().st_mode & 0o777) == 0o700
    for path in [state, *state.rglob("*")]:
        mode = path.lstat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o700, path
        else:
            assert mode == 0o600, (path, oct(mode))
    names = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}
    assert {"decisions.jsonl", "daemon.log", "docktor.lock", "state/worker.json"} <= names, names
    # nobody can read none of it
    for name in ("decisions.jsonl", "daemon.log", "state/worker.json"):
        done = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(state / name)], capture_output=True, timeout=30, check=False)
        assert done.returncode != 0 and done.stdout == b""


def test_stop_never_signals_a_process_of_another_user(tmp_path: Path) -> None:
    """The lock names the pid `daemon stop` signals: one held by another user's process (whatever
    put it there) is refused, and that process lives on."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = config(tmp_path, state)
    fd = os.open(state / "docktor.lock", os.O_RDWR | os.O_CREAT, 0o600)
    holder = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         sys.executable, "-c", f"import fcntl, time; fcntl.flock({fd}, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"],
        pass_fds=(fd,), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        os.pwrite(fd, f'{{"pid": {holder.pid}, "what": "daemon"}}'.encode(), 0)
        done = docktor("daemon", "stop", "--config", str(cfg))
        assert done.returncode == 2
        assert done.stderr.strip() == (f"error: pid {holder.pid}, recorded in {state / 'docktor.lock'}, runs as uid {NOBODY}, "
                                       "not as you (uid 0): refusing to signal it")
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
        os.close(fd)
