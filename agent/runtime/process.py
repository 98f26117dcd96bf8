"""The daemon process, from outside: its state folder, lock and pid; starting it detached and stopping it.

One daemon per state folder, found through an flock in ``state_dir``. The lock, not the pid
file, is the truth: the kernel drops an flock when its holder dies, so a stale pid file after a
crash never blocks the next start. The folder must be this user's and writable by no one else
(:func:`trusted`; every file in it opened through :mod:`docktor.tools.sdk.files`). A running
daemon answers on its control socket (``state_dir/docktor.sock``, :mod:`.control_socket`), records
what ``stop`` needs in ``state_dir/daemon.json``, and leaves a pointer from its config's path to
its state (:mod:`.rundir`), so ``daemon stop`` and ``daemon status`` (:mod:`.locate`) work when the
config file has since been broken. The process's own main is :mod:`.foreground`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig
from docktor.agent.problems import UsageError


@dataclass(frozen=True)
class Paths:
    state_dir: Path

    @property
    def pid(self) -> Path:
        return self.state_dir / "docktor.pid"

    @property
    def lock(self) -> Path:
        return self.state_dir / "docktor.lock"

    @property
    def decisions(self) -> Path:
        return self.state_dir / "decisions.jsonl"

    @property
    def status(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "daemon.log"

    @property
    def socket(self) -> Path:
        return self.state_dir / "docktor.sock"

    @property
    def info(self) -> Path:
        """What a running daemon says about itself for ``stop`` (its config, how long to wait)."""
        return self.state_dir / "daemon.json"


def paths_for(config: DocktorConfig) -> Paths:
    assert config.state_dir is not None  # the loader always resolves it
    return Paths(config.state_dir)


def trusted(paths: Paths, *, create: bool) -> bool:
    """Whether ``paths.state_dir`` is a folder only this user controls (created 0700 with
    ``create``; False when absent). A folder another user owns or can write is refused with a
    UsageError naming ``state_dir``: from it a planted ``docktor.pid`` link or a forged lock file
    would have this user's daemon overwrite or signal what that user chose (OpenSSH's StrictModes)."""
    from docktor.tools.sdk import UnsafePath, private_dir

    if not create and not os.path.lexists(paths.state_dir):
        return False
    try:
        private_dir(paths.state_dir, create=create, what="state_dir")
    except UnsafePath as e:
        raise UsageError(str(e)) from None
    return True


def _open_private(path: Path, flags: int, *, create: bool = False) -> int:
    from docktor.tools.sdk import UnsafePath, open_private

    try:
        return open_private(path, flags, create=create)
    except UnsafePath as e:
        raise UsageError(str(e)) from None


class AlreadyRunning(Exception):
    """The config's state folder is held; ``config`` is the holder's own config file, when it said."""

    def __init__(self, message: str, config: str | None = None):
        super().__init__(message)
        self.config = config


def _holder_text(holder: dict[str, Any], pid: int | None) -> str:
    config = holder.get("config")
    return f"pid {pid if pid is not None else holder.get('pid', '?')}" + (f", config {config}" if isinstance(config, str) else "")


def acquire_lock(paths: Paths, what: str = "daemon", config: Path | None = None) -> int:
    """Take the config's lock for the life of this process; raise AlreadyRunning if held.

    The lock file says who holds it (``what``: a daemon, or ``decide --once`` acting, and from
    which config file: two configs may share a ``state_dir``), for the message the next one gets."""
    trusted(paths, create=True)
    fd = _open_private(paths.lock, os.O_RDWR, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        held_by = holder.get("config") if isinstance(holder.get("config"), str) else None
        if holder.get("what", "daemon") != "daemon":
            raise AlreadyRunning(f"{holder['what']} ({_holder_text(holder, None)}) is acting on {paths.state_dir}", held_by) from None
        raise AlreadyRunning(f"a daemon is already running on {paths.state_dir} ({_holder_text(holder, running_pid(paths))})",
                             held_by) from None
    os.ftruncate(fd, 0)
    me = {"pid": os.getpid(), "what": what, "config": None if config is None else str(config.resolve())}
    os.pwrite(fd, json.dumps(me).encode(), 0)
    return fd


def _lock_holder_of(paths: Paths) -> dict[str, Any]:
    try:
        fd = _open_private(paths.lock, os.O_RDONLY)
    except (OSError, UsageError):
        return {}
    try:
        return lock_holder(fd)
    finally:
        os.close(fd)


def lock_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running_pid(paths: Paths) -> int | None:
    """The pid of the live daemon for these paths, or None. Read only from a state folder and
    lock file of this user's own (UsageError otherwise): the pid found here may be signalled."""
    if not trusted(paths, create=False):
        return None
    try:
        fd = _open_private(paths.lock, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd).get("pid")
        if isinstance(holder, int):
            return holder
        try:
            return int(read_state_file(paths.pid).strip())
        except (OSError, ValueError, UsageError):
            return -1  # locked, but the pid file is being written
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_state_file(path: Path) -> str:
    """A file of the state folder, as text (never through a link, only this user's own)."""
    fd = _open_private(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read().decode(errors="replace")


def load_for_run(path: Path) -> DocktorConfig:
    """The config as ``daemon start`` checks it (and ``reload`` re-checks it): loaded, validated,
    its LLM endpoint resolved. Raises UsageError with one problem per line."""
    from docktor.agent.config.load import load_config

    config = load_config(path)
    if config.llm.provider != "none":
        from docktor.agent.advisor.client import config_endpoint

        config_endpoint(config, os.environ)
    return config


def record_daemon(paths: Paths, config: DocktorConfig) -> None:
    """What ``stop`` and ``status`` need without a valid config: ``daemon.json`` in the state folder
    and a pointer from the config's path to it. A failure only costs that convenience."""
    from docktor.agent.runtime.rundir import RunDirError, write_pointer

    info = {"pid": os.getpid(), "config": str(config.path.resolve()) if config.path else None,
            "state_dir": str(paths.state_dir), "stop_wait_s": stop_wait(config), "socket": str(paths.socket)}
    try:
        from docktor.tools.sdk import write_atomic

        write_atomic(paths.info, json.dumps(info).encode(), sync=False)
    except OSError as e:
        logging.getLogger("docktor").warning("cannot write %s: %s", paths.info, e.strerror or e)
    if config.path is not None:
        try:
            write_pointer(config.path, {"state_dir": str(paths.state_dir), "pid": os.getpid()})
        except (OSError, RunDirError) as e:
            logging.getLogger("docktor").warning("cannot record where this daemon's state is (%s): `daemon stop` "
                                                 "needs a valid config to find it", e)


def start_background(config_path: Path, config: DocktorConfig, *, advisory: bool, wait: float = 15.0) -> int:
    """Start a detached daemon (its own session, output to daemon.log); return its pid."""
    paths = paths_for(config)
    pid = running_pid(paths)
    if pid is not None:
        holder = _lock_holder_of(paths)
        held_by = holder.get("config") if isinstance(holder.get("config"), str) else None
        raise AlreadyRunning(f"a daemon is already running on {paths.state_dir} ({_holder_text(holder, pid)})", held_by)
    trusted(paths, create=True)
    args = [sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--config", str(config_path), "--foreground"]
    if advisory:
        args.append("--advisory")
    out = _open_private(paths.daemon_log, os.O_WRONLY | os.O_APPEND, create=True)
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=os.getcwd()
        )
    finally:
        os.close(out)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = read_state_file(paths.daemon_log)[-4096:].strip().splitlines()[-1:]
            if proc.returncode == 2 and tail and tail[0].startswith("error: "):
                raise UsageError(tail[0][len("error: "):])  # the daemon's own one-line refusal
            raise UsageError(f"daemon exited at start (code {proc.returncode}): {tail[0] if tail else 'no output'}")
        if running_pid(paths) == proc.pid and _answers(paths, proc.pid):
            return proc.pid  # ready: it holds the lock and its targets, and answers on its socket
        time.sleep(0.05)
    raise UsageError(f"daemon did not report ready within {wait:g} s; see {paths.daemon_log}")


def _answers(paths: Paths, pid: int) -> bool:
    from docktor.agent.runtime.control_socket import ControlClient, ControlError, ControlUnavailable

    try:
        return bool(ControlClient(paths.socket, timeout=1.0).ping().get("pid") == pid)
    except (ControlUnavailable, ControlError):
        return False


def stop_wait(config: DocktorConfig) -> float:
    """How long ``stop`` waits: the daemon finishes its tick, then stops replicas in parallel,
    each allowed its grace period."""
    from docktor.tools.registry import executor_plugin

    grace = max(
        (executor_plugin(s.executor.kind).grace_period(s.executor.settings) for s in config.services if s.executor),
        default=10.0,
    )
    # no service listed (discover: finds them): a look at the engine is its tick
    return grace + max((s.check_interval for s in config.services), default=config.discover.interval) + 10


#: how long ``stop`` waits when the daemon did not record it (daemon.json)
DEFAULT_STOP_WAIT_S = 30.0


def recorded_stop_wait(paths: Paths) -> float:
    try:
        return float(json.loads(read_state_file(paths.info))["stop_wait_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_STOP_WAIT_S


class StillRunning(Exception):
    """``stop`` gave up waiting; ``left`` says what is still running, one line each."""

    def __init__(self, pid: int, waited: float, left: list[str]):
        super().__init__(f"docktor (pid {pid}) did not stop within {waited:g} s")
        self.pid, self.waited, self.left = pid, waited, left


@dataclass
class Stopped:
    pid: int
    killed: bool = False  # SIGKILL after the wait (``--force``)
    waited: float = 0.0
    left: list[str] | None = None  # processes of the daemon's still alive after the kill


def stop(paths: Paths, *, wait: float | None = None, force: bool = False) -> Stopped | None:
    """SIGTERM the daemon and wait until its process has exited. None if none ran.

    The lock is released a moment before the process is gone (the interpreter still shuts down),
    so the wait is for the pid itself: when this returns, nothing of the daemon is left. After
    ``wait`` seconds: with ``force``, SIGKILL (its process group too, when it leads one) and say
    what of it is left; without, raise :class:`StillRunning` saying what is still running.
    """
    wait = recorded_stop_wait(paths) if wait is None else wait
    pid = running_pid(paths)
    if pid is None or pid <= 0:
        return None
    owner = process_uid(pid)
    if owner is not None and owner != os.getuid():
        raise UsageError(f"pid {pid}, recorded in {paths.lock}, runs as uid {owner}, not as you (uid {os.getuid()}): "
                         "refusing to signal it")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    started = time.monotonic()
    deadline = started + wait
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return Stopped(pid, waited=time.monotonic() - started)
        time.sleep(0.05)
    tree = process_tree(pid)
    if not force:
        raise StillRunning(pid, wait, describe_processes(tree, pid, doing=_doing(paths)))
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)  # the compose CLI and other helpers it started
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    end = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.2)  # helpers that exit with their parent get a moment before we list what is left
    alive = [p for p in tree if p != pid and process_alive(p)]
    return Stopped(pid, killed=True, waited=wait, left=describe_processes(alive, pid))


def _doing(paths: Paths) -> str | None:
    from docktor.agent.runtime.control_socket import ControlClient, ControlError, ControlUnavailable

    try:
        st = ControlClient(paths.socket, timeout=1.0).status()
    except (ControlUnavailable, ControlError):
        return None
    return str(st.get("phase") or "") or None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents first (Linux /proc; just ``pid`` elsewhere)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
    return out


def describe_processes(pids: list[int], daemon_pid: int, doing: str | None = None) -> list[str]:
    lines = []
    for p in pids:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        if len(cmd) > 100:
            cmd = cmd[:99] + "…"
        what = f"docktor daemon{f' ({doing})' if doing else ''}" if p == daemon_pid else cmd
        lines.append(f"pid {p}: {what}")
    return lines


def process_uid(pid: int) -> int | None:
    """The real uid ``pid`` runs as (Linux /proc), None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie waiting to be reaped has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: kill(0) said it exists
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
