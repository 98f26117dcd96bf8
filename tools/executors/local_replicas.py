"""A service's replica processes: started with its marks, recognised by them, stopped with all they started.

The marks
    Every replica's environment holds ``DOCKTOR_OWNER=<token>`` (a hash of the state folder and
    the service's name: *this service's*) and ``DOCKTOR_INSTANCE=<token>`` (random, new at every
    start: *this start of this replica*); whatever it starts inherits both, unless it clears its
    environment. A process counts as one of this service's only when it runs as this user (real
    and effective uid) *and* carries the service's mark: a record naming a pid, or a pid's place in
    a session, is never enough to signal it (another user may have written the record, and a pid
    may have been reused).

Stopping a replica
    SIGTERM to its process group, to every process of its session (one may have moved to a group
    of its own) and to every process of this user carrying its instance mark (one that called
    ``setsid`` left the session); then, once nothing of that is left or ``stop_grace_period`` has
    passed, SIGKILL to whatever remains. A replica whose session is not known to be ours (a
    recorded one found dead) has each member of its session checked before any signal.

Logs
    ``<state_dir>/logs/<name>.<i>.log`` (``0600`` in a ``0700`` folder, never opened through a link)
    gets the replica's stdout and stderr and the executor's own lines about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docktor.tools.executors.procfs as procfs
from docktor.tools.sdk import UnsafePath, open_private, private_dir

#: how often an adopted replica (not our child) is checked when no pidfd can watch it
ADOPTED_POLL_S = 0.5
#: how often a stop looks for what is left of a replica once the replica itself exited
GROUP_POLL_S = 0.1
OWNER_VAR = "DOCKTOR_OWNER"
INSTANCE_VAR = "DOCKTOR_INSTANCE"


@dataclass(eq=False)
class Replica:
    """One replica process: started here, or adopted from an earlier daemon."""

    index: int
    pid: int
    #: start time in clock ticks since boot: with the pid, its identity (None: unknown)
    start_ticks: int | None
    started_at: float
    #: resolves to (exit code or None when unknown, clock time of exit) once the process is gone
    exited: asyncio.Task[tuple[int | None, float]]
    #: its DOCKTOR_INSTANCE, which what it starts carries (None: started by a Docktor without one)
    instance: str | None = None
    #: started by an earlier daemon and adopted: not our child
    adopted: bool = False
    #: its session is this replica's (our child, or a live adopted one that passed the checks);
    #: False for a recorded replica found dead, whose session members are each checked
    trusted: bool = True

    @property
    def alive(self) -> bool:
        return not self.exited.done()


@dataclass
class Slot:
    """Replica number ``index`` of the service, and what happened to it."""

    index: int
    process: Replica | None = None
    #: consecutive crashes, each within the stable time of its start; drives the back-off
    crashes: int = 0
    restart_at: float | None = None
    #: why this slot counts as failed (None: it does not)
    failure: str | None = None
    #: the replica exited with code 0: done, not restarted until the next scale
    completed: bool = False
    #: the command could not be started at all (not a replica problem)
    start_error: str | None = None


@dataclass(frozen=True)
class Stopped:
    killed: bool
    how: str


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited, exit code unknown (adopted: not a child of this daemon)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _user(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    return f"uid {uid}"


class ReplicaLog:
    """``<state_dir>/logs/``: each replica's output and the executor's lines about it."""

    def __init__(self, folder: Path, service: str) -> None:
        self.folder = folder
        self.service = service
        self._checked = False

    def path(self, index: int) -> Path:
        """Replica ``index``'s log; index 0: the service's own."""
        return self.folder / (f"{self.service}.{index}.log" if index else f"{self.service}.log")

    def open(self, index: int) -> int:
        """A descriptor appending to the log (``0600``, no link followed). Raises
        :class:`~docktor.tools.sdk.UnsafePath` or ``OSError``."""
        if not self._checked:
            private_dir(self.folder, what="the replicas' log folder", tighten=True)
            self._checked = True
        try:
            return open_private(self.path(index), os.O_WRONLY | os.O_APPEND, create=True)
        except FileNotFoundError:  # the folder was removed meanwhile
            self._checked = False
            raise

    def note(self, index: int, message: str) -> None:
        """Append a line of our own to the replica's log (index 0: the service's), so the log tells the whole story."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        who = f"replica {index}" if index else "executor"
        try:
            fd = self.open(index)
        except (UnsafePath, OSError):
            return  # a full disk (or a planted link) must not stop the executor from stopping processes
        with contextlib.suppress(OSError), os.fdopen(fd, "a", encoding="utf-8") as log:
            log.write(f"[docktor {stamp}] {who}: {message}\n")


class Replicas:
    """Starts, recognises and stops the replica processes of one service."""

    def __init__(
        self,
        service: str,
        owner: str,
        command: list[str],
        env: dict[str, str],
        working_dir: Path,
        log: ReplicaLog,
        stop_grace_period: float,
        clock: Callable[[], float],
    ) -> None:
        self.service = service
        self.owner = owner
        self.command = command
        self.env = env
        self.working_dir = working_dir
        self.log = log
        self.stop_grace_period = stop_grace_period
        self._clock = clock

    # ------------------------------------------------------------------ starting

    async def start(self, index: int) -> Replica | str:
        """Start replica ``index``; a one-line reason when the command cannot run."""
        if not self.working_dir.is_dir():
            return f"working_dir not found: {self.working_dir}"
        instance = secrets.token_hex(8)
        env = {
            **self.env,
            "DOCKTOR_SERVICE": self.service,
            "DOCKTOR_REPLICA": str(index),
            OWNER_VAR: self.owner,
            INSTANCE_VAR: instance,
        }
        program = self.command[0]
        # Only the program name: arguments may carry values the user would rather not see logged.
        self.log.note(index, f"starting {program}")
        try:
            log = self.log.open(index)
        except UnsafePath as e:
            return f"cannot open log file: {e}"
        except OSError as e:
            return f"cannot open log file {self.log.path(index)}: {e.strerror or e}"
        try:
            # No preexec_fn: the daemon has threads (engine calls, stats), and CPython only
            # promises a safe fork without one; start_new_session is done by the C child code.
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.working_dir,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            return f"command not found: {program}"
        except PermissionError:
            return f"command not executable: {program} (permission denied)"
        except OSError as e:
            return f"cannot start {program}: {e.strerror or e}"
        except ValueError as e:  # e.g. a NUL byte in an argument or an env value
            return f"cannot start {program}: {e}"
        finally:
            os.close(log)  # the child has its own copy

        info = procfs.proc_info(proc.pid)

        async def watch() -> tuple[int | None, float]:
            code = await proc.wait()
            return code, self._clock()

        return Replica(index, proc.pid, info.start_ticks if info else None, self._clock(), asyncio.create_task(watch()), instance)

    def adopted(self, index: int, pid: int, ticks: int | None, instance: str | None, *, gone: bool = False) -> Replica:
        """A replica started by an earlier daemon (``gone``: found dead, its session untrusted),
        watched through a pidfd, or by polling /proc."""

        async def watch() -> tuple[int | None, float]:
            if not gone:
                await _wait_exit(pid, ticks)
            return None, self._clock()

        # counted as up long enough: an adopted replica is not a fresh start that may crash
        return Replica(index, pid, ticks, float("-inf"), asyncio.create_task(watch()), instance, adopted=True, trusted=not gone)

    # ------------------------------------------------------------------ recognising

    def foreign(self, pid: int) -> str | None:
        """Why ``pid`` is not one of this service's processes (None: it is one)."""
        ids = procfs.user_ids(pid)
        me = os.geteuid()
        if ids is None:
            return "is gone"
        if ids != (me, me):
            return f"runs as {_user(ids[1] if ids[1] != me else ids[0])}, not as {_user(me)}"
        if not procfs.environ_has(pid, f"{OWNER_VAR}={self.owner}"):
            return f"does not carry this service's {OWNER_VAR} marker"
        return None

    def unrecorded(self, known: set[int], kept: set[str]) -> list[procfs.ProcInfo]:
        """Session leaders of this user with the service's mark that no record lists (a daemon
        killed between starting a replica and recording it), except what a replica in ``kept``
        (instances adopted or being stopped) started and took out of its session."""
        return [
            info for info in procfs.carrying([f"{OWNER_VAR}={self.owner}"], os.geteuid())
            if info.sid == info.pid and info.pid not in known and procfs.environ_value(info.pid, INSTANCE_VAR) not in kept
        ]

    def session(self, p: Replica) -> list[procfs.ProcInfo]:
        """The live processes of the replica's session that may be signalled."""
        if not procfs.available():
            return []
        members = procfs.by_session({p.pid})[p.pid]
        if p.start_ticks is not None and any(m.pid == p.pid and m.start_ticks != p.start_ticks for m in members):
            return []  # its pid leads another session now: the replica's ended with it, pids were reused
        return members if p.trusted else [m for m in members if self.foreign(m.pid) is None]

    def strays(self, p: Replica) -> list[procfs.ProcInfo]:
        """Processes of this user carrying the replica's marks outside its session (they called ``setsid``)."""
        if p.instance is None or not procfs.available():
            return []
        marks = [f"{OWNER_VAR}={self.owner}", f"{INSTANCE_VAR}={p.instance}"]
        return [info for info in procfs.carrying(marks, os.geteuid()) if info.sid != p.pid]

    def left(self, p: Replica) -> bool:
        """Something of the replica's session (or group, without /proc) is still running.

        Zombies waiting for a reaper do not count: where nobody reaps orphans they never go away.
        """
        if procfs.available():
            return bool(self.session(p))
        return p.trusted and _group_alive(p.pid)

    # ------------------------------------------------------------------ stopping

    async def stop(self, p: Replica) -> Stopped:
        """SIGTERM the replica, its session and its strays; SIGKILL what is left after the grace period."""
        began = time.monotonic()
        deadline = began + self.stop_grace_period
        was_alive = p.alive
        strays = self.strays(p)
        if was_alive or self.left(p) or strays:
            outside = f" and {len(strays)} of its processes outside it" if strays else ""
            self.log.note(p.index, f"sending SIGTERM to process group {p.pid}{outside}")
            self._signal(p, signal.SIGTERM, strays)
        if p.alive:
            await asyncio.wait([p.exited], timeout=self.stop_grace_period)
        # The leader may be gone while what it started lingers: in its group, or out of its session.
        done = False
        while not done and time.monotonic() < deadline:
            if not self.left(p) and not any(procfs.same_process(s.pid, s.start_ticks) for s in strays):
                seen = {(s.pid, s.start_ticks) for s in strays}
                late = [s for s in self.strays(p) if (s.pid, s.start_ticks) not in seen]
                done = not late
                self._signal(p, signal.SIGTERM, late, group=False)  # started since the first look
                strays += late
            if not done:
                await asyncio.sleep(GROUP_POLL_S)
        killed = False
        if not done:
            strays = self.strays(p)
            killed = p.alive or self.left(p) or bool(strays)
        if killed:
            self.log.note(p.index, f"still running after {self.stop_grace_period:g} s: sending SIGKILL")
            self._signal(p, signal.SIGKILL, strays)
        code, _ = await p.exited
        took = time.monotonic() - began
        self.log.note(p.index, f"stopped ({describe_exit(code)})")
        if killed:
            return Stopped(True, f"ignored SIGTERM for {self.stop_grace_period:g} s: SIGKILL")
        if not was_alive:
            return Stopped(False, "had already exited")
        return Stopped(False, f"{describe_exit(code)} {took:.1f} s after SIGTERM")

    def _signal(self, p: Replica, sig: signal.Signals, strays: list[procfs.ProcInfo], *, group: bool = True) -> None:
        """``sig`` to the replica's group (when it is known to be the replica's), to the members of
        its session that may be signalled, and to ``strays``."""
        members = self.session(p) if group else []
        if group and p.trusted and (p.alive or any(m.pgid == p.pid for m in members) or not procfs.available()):
            # the group exists as long as a member does, so its id cannot name another process meanwhile
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
        for member in [m for m in members if not (p.trusted and m.pgid == p.pid)] + strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, sig)


async def _wait_exit(pid: int, start_ticks: int | None) -> None:
    """Until ``pid`` (not our child) has exited: a pidfd where the kernel has them, else polling /proc."""
    fd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        fd = os.pidfd_open(pid)
    if fd is None:
        while _still(pid, start_ticks):
            await asyncio.sleep(ADOPTED_POLL_S)
        return
    try:
        if not _still(pid, start_ticks):  # it may have gone (and the pid been reused) before the open
            return
        gone = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, gone.set)
        try:
            await gone.wait()
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def _still(pid: int, start_ticks: int | None) -> bool:
    if start_ticks is not None:
        return procfs.same_process(pid, start_ticks)
    info = procfs.proc_info(pid)
    return info is not None and not info.zombie


def _group_alive(pid: int) -> bool:
    """Without /proc: some process of the group has not exited (zombies included)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def program_problem(command: list[str], env: dict[str, str], working_dir: Path) -> str | None:
    """Why ``command`` could not start here, looked up as a replica's start looks it up (the
    replicas' PATH, a path with a ``/`` from ``working_dir``); None when it can."""
    if not working_dir.is_dir():
        return f"working_dir {str(working_dir)!r} is not a directory"
    program = command[0]
    if "/" in program:
        path = working_dir / program  # an absolute program stays itself
        if not path.is_file():
            return f"command: {program!r} does not exist (from {working_dir})"
        if not os.access(path, os.X_OK):
            return f"command: {program!r} is not executable"
        return None
    search = os.pathsep.join(os.get_exec_path(env))
    if shutil.which(program, path=search) is not None:
        return None
    names: set[str] = set()
    for folder in os.get_exec_path(env):
        with contextlib.suppress(OSError):
            names.update(p.name for p in Path(folder).iterdir())
    close = difflib.get_close_matches(program, sorted(names), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"command: program {program!r} not found on the replicas' PATH{hint}"


def summarize_problems(problems: list[tuple[int, str]]) -> str:
    """``replicas 1, 2, 3: command not found: foo`` rather than the same reason three times."""
    by_reason: dict[str, list[int]] = {}
    for index, reason in problems:
        by_reason.setdefault(reason, []).append(index)
    return "; ".join(
        (f"replica {ix[0]}" if len(ix) == 1 else "replicas " + ", ".join(map(str, ix))) + reason
        for reason, ix in by_reason.items()
    )
