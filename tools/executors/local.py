"""The local executor: a service's replicas are child processes of the daemon.

Docktor's embedded default (``executor: local``, used by ``make demo``). It runs N copies of
``command`` like a Procfile runner or supervisor's ``numprocs``: replica *i* (1-based) gets
``DOCKTOR_SERVICE=<name>`` and ``DOCKTOR_REPLICA=<i>`` in its environment and appends stdout and
stderr to ``<state_dir>/logs/<name>.<i>.log``.

Processes and signals
    Commands are started with :func:`asyncio.create_subprocess_exec` (never a shell), stdin from
    ``/dev/null``, each in a new session (``start_new_session=True``) so Ctrl-C in the daemon's
    terminal reaches only the daemon, which then stops replicas in order. Stopping signals the
    replica's whole process group: SIGTERM, then SIGKILL once ``stop_grace_period`` has passed.
    Replicas being stopped are stopped concurrently. Scaling down removes the highest indexes.

Restarts (like Docker's ``restart: on-failure``)
    A replica that exits on its own with a non-zero code (or is killed by a signal nobody here
    sent) is *failed*: it does not count as running, and :meth:`LocalExecutor.status` restarts it
    once its slot's back-off has passed (1 s, 2 s, 4 s ... capped at 60 s). The back-off and the
    failed mark reset once a replica has stayed up for 10 s, as Docker resets its restart delay.
    A replica that exits with code 0 finished its work: it is neither restarted nor failed, and
    the next :meth:`~LocalExecutor.scale` starts it again. Restarts happen when ``status()`` or
    ``scale()`` is called, i.e. at the daemon's tick, never in the background.

When the daemon dies hard (Linux)
    Every replica is started with ``PR_SET_PDEATHSIG=SIGKILL`` so the kernel kills it when the
    daemon is killed (``kill -9``, OOM killer) and :meth:`~LocalExecutor.close` never runs. Python
    3.11 has no Popen option for this, so it is set from ``preexec_fn``, which CPython documents
    as unsafe in threaded programs because the forked child may take a lock another thread held.
    The function here only calls ``prctl`` and ``getppid`` through a libc handle loaded before
    the fork (no imports, no Python-level locks; glibc's fork resets malloc's locks), which is the
    usual safe subset. A shell or helper-program wrapper was ruled out: it would cost a process
    start per replica and hide "command not found" from the parent. Limits, documented rather
    than worked around:

    * the kernel sends the signal when the *thread* that forked the child exits, so the event
      loop that calls ``scale``/``status`` must live as long as the daemon (it does: the main
      thread runs it);
    * only the replica process itself gets the signal; grandchildren it started are signalled
      by ``close()`` through the process group, but not when the daemon is killed hard;
    * the setting is cleared when a replica execs a set-user-ID program;
    * other platforms have no equivalent: there, replicas outlive a hard-killed daemon (they are
      in their own session) and must be stopped by hand (``pkill -g <pgid>``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from docktor.tools.sdk import Context, Executor, ExecutorError, PluginSettings, ReplicaStatus, ScaleOutcome, Seconds

#: how long new replicas must stay up before ``scale`` calls them started
SETTLE_S = 0.5
#: first restart delay after a crash; doubles per consecutive crash of the same slot
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
#: a replica up this long is healthy again: its slot's back-off and failed mark reset
STABLE_AFTER_S = 10.0


def _split_command(value: Any) -> Any:
    return shlex.split(value) if isinstance(value, str) else value


class LocalSettings(PluginSettings):
    """``executor: local``: run ``command`` N times as child processes of the daemon."""

    kind: Literal["local"]
    #: the replica's program and arguments: a list, or a string split like a shell would (no shell runs it)
    command: Annotated[list[str], BeforeValidator(_split_command), Field(min_length=1)]
    #: environment variables for the replicas, on top of the daemon's
    env: dict[str, str] = Field(default_factory=dict)
    #: the replicas' working directory, relative to the config file's folder (default: that folder)
    working_dir: Path | None = None
    #: SIGTERM, then SIGKILL after this long
    stop_grace_period: Seconds = 10.0


# --------------------------------------------------------------------------- parent-death signal

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when ``parent_pid`` goes away."""
    prctl = _PRCTL
    if prctl is None:
        return None
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody will ever signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------- bookkeeping


@dataclass(eq=False)
class _Process:
    index: int
    proc: asyncio.subprocess.Process
    started_at: float
    #: resolves to (exit code, loop time of exit) once the process has been reaped
    exited: asyncio.Task[tuple[int, float]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self.exited.done()


@dataclass
class _Slot:
    index: int
    process: _Process | None = None
    #: consecutive crashes, each within STABLE_AFTER_S of its start; drives the back-off
    crashes: int = 0
    restart_at: float | None = None
    #: why this slot counts as failed (None: it does not)
    failure: str | None = None
    #: the replica exited with code 0: done, not restarted until the next scale
    completed: bool = False
    #: the command could not be started at all (not a replica problem)
    start_error: str | None = None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class LocalExecutor(Executor[LocalSettings]):
    """Replicas of one service as child processes. Not thread-safe; one event loop."""

    kind = "local"
    Settings = LocalSettings
    in_process = True

    def __init__(
        self,
        settings: LocalSettings,
        context: Context,
        *,
        settle: float = SETTLE_S,
        restart_backoff: float = RESTART_BACKOFF_S,
        restart_backoff_max: float = RESTART_BACKOFF_MAX_S,
        stable_after: float = STABLE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, context)
        self.name = context.service
        self.command = list(settings.command)
        self.env: Mapping[str, str] = dict(settings.env)
        self.working_dir = context.path(settings.working_dir) if settings.working_dir is not None else context.base_dir
        self.log_dir = context.state_dir / "logs"
        self.stop_grace_period = settings.stop_grace_period
        self.settle = settle
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.stable_after = stable_after
        self._clock = clock
        self._desired = 0
        self._slots: dict[int, _Slot] = {}
        #: processes asked to stop but possibly not dead yet (a cancelled scale leaves some here)
        self._stopping: set[_Process] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ Executor interface

    async def status(self) -> ReplicaStatus:
        async with self._lock:
            if self._closed:
                raise ExecutorError(f"local executor for {self.name!r} is closed")
            await self._reconcile()
            return self._status()

    async def scale(self, replicas: int) -> ScaleOutcome:
        began = time.monotonic()
        if replicas < 0:
            return ScaleOutcome(False, f"cannot scale to {replicas} replicas", 0.0, None)
        async with self._lock:
            if self._closed:
                return ScaleOutcome(False, "executor is closed", self._ms(began), 0)
            before = self._running()
            # A scale is a fresh start: crash records and "finished" replicas are forgotten, and
            # every slot up to the target is started now (back-off or not): the caller asked.
            for slot in self._slots.values():
                slot.failure = None
                slot.completed = False
                slot.start_error = None
            doomed = [self._slots.pop(i) for i in sorted(self._slots, reverse=True) if i > replicas]
            self._desired = replicas

            stopping = [s.process for s in doomed if s.process is not None]
            stop_task = asyncio.create_task(self._stop_all(stopping))
            killed: list[int] = []
            try:
                started, problems = await self._start_missing()
                fresh = [p for p in started if p.alive]
                if fresh:
                    await asyncio.wait([p.exited for p in fresh], timeout=self.settle)
                for p in started:
                    if not p.alive:
                        code, _ = p.exited.result()
                        problems.append((p.index, f" {_describe_exit(code)} right after start"))
                killed = await stop_task
            finally:
                if not stop_task.done():
                    stop_task.cancel()
            await self._reconcile()

            running = self._running()
            if problems:
                return ScaleOutcome(False, _summarize(problems), self._ms(began), running)
            stopped = sorted((p.index for p in stopping), reverse=True)
            what = []
            if started:
                what.append("started " + ", ".join(str(p.index) for p in started))
            if stopped:
                what.append("stopped " + ", ".join(map(str, stopped)))
            if killed:
                what.append(f"{', '.join(map(str, killed))} ignored SIGTERM for {self.stop_grace_period:g} s: SIGKILL")
            verb = f"{before} -> {_replicas(replicas)}" if what else f"already at {_replicas(replicas)}"
            return ScaleOutcome(True, verb + (f" ({'; '.join(what)})" if what else ""), self._ms(began), running)

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._desired = 0
            processes = [s.process for s in self._slots.values() if s.process is not None]
            self._slots.clear()
            await self._stop_all(list(dict.fromkeys(processes + list(self._stopping))))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _ms(began: float) -> float:
        return (time.monotonic() - began) * 1000.0

    def _running(self) -> int:
        return sum(1 for s in self._slots.values() if s.process is not None and s.process.alive)

    def _status(self) -> ReplicaStatus:
        notes: list[tuple[int, str]] = []
        now = self._clock()
        for i in sorted(self._slots):
            slot = self._slots[i]
            if slot.start_error:
                notes.append((i, f": {slot.start_error}"))
            elif slot.failure and slot.process is None and slot.restart_at is not None:
                wait = math.ceil(max(0.0, slot.restart_at - now))
                notes.append((i, f" {slot.failure}, restart #{slot.crashes} in {wait} s"))
            elif slot.failure:
                notes.append((i, f" {slot.failure}, restarted"))
            elif slot.completed:
                notes.append((i, " exited with code 0, not restarted"))
        return ReplicaStatus(
            desired=self._desired,
            running=self._running(),
            failed=sum(1 for s in self._slots.values() if s.failure or s.start_error),
            healthy=not any(s.start_error for s in self._slots.values()),
            detail=_summarize(notes),
        )

    async def _reconcile(self) -> None:
        """Notice exits, restart failed slots whose back-off has passed, clear recovered ones."""
        now = self._clock()
        for slot in self._slots.values():
            p = slot.process
            if p is not None and not p.alive:
                code, exited_at = p.exited.result()
                slot.process = None
                self._note(slot.index, f"{_describe_exit(code)}")
                if code == 0:
                    slot.completed = True
                    continue
                ran = exited_at - p.started_at
                slot.crashes = 1 if ran >= self.stable_after else slot.crashes + 1
                slot.failure = _describe_exit(code)
                slot.restart_at = exited_at + self._backoff(slot.crashes)
            elif p is not None and slot.failure and now - p.started_at >= self.stable_after:
                slot.failure = None
                slot.crashes = 0
        for slot in self._slots.values():
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                await self._start(slot)

    def _backoff(self, crashes: int) -> float:
        return min(self.restart_backoff_max, self.restart_backoff * 2.0 ** max(0, crashes - 1))

    async def _start_missing(self) -> tuple[list[_Process], list[tuple[int, str]]]:
        started: list[_Process] = []
        problems: list[tuple[int, str]] = []
        for i in range(1, self._desired + 1):
            slot = self._slots.setdefault(i, _Slot(i))
            if slot.process is not None and slot.process.alive:
                continue
            if slot.process is not None:  # exited, not yet noticed: this scale replaces it
                slot.process = None
            error = await self._start(slot)
            if error:
                problems.append((i, f": {error}"))
            elif slot.process is not None:
                started.append(slot.process)
        return started, problems

    async def _start(self, slot: _Slot) -> str | None:
        """Start the slot's replica. Returns a one-line reason when the command cannot run."""
        slot.restart_at = None
        if not self.working_dir.is_dir():
            return self._start_failed(slot, f"working_dir not found: {self.working_dir}")
        env = {**os.environ, **self.env, "DOCKTOR_SERVICE": self.name, "DOCKTOR_REPLICA": str(slot.index)}
        program = self.command[0]
        # Only the program name: arguments may carry values the user would rather not see logged.
        self._note(slot.index, f"starting {program}")
        path = self._log_path(slot.index)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(path, "ab")  # noqa: SIM115 - the child gets a copy; ours closes below
        except OSError as e:
            return self._start_failed(slot, f"cannot open log file {path}: {e.strerror or e}")
        try:
            with log:
                proc = await asyncio.create_subprocess_exec(
                    *self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.working_dir,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
        except FileNotFoundError:
            return self._start_failed(slot, f"command not found: {program}")
        except PermissionError:
            return self._start_failed(slot, f"command not executable: {program} (permission denied)")
        except OSError as e:
            return self._start_failed(slot, f"cannot start {program}: {e.strerror or e}")
        except ValueError as e:  # e.g. a NUL byte in an argument or an env value
            return self._start_failed(slot, f"cannot start {program}: {e}")

        async def watch() -> tuple[int, float]:
            code = await proc.wait()
            return code, self._clock()

        slot.start_error = None
        slot.process = _Process(slot.index, proc, self._clock(), asyncio.create_task(watch()))
        self._note(slot.index, f"started, pid {proc.pid}")
        return None

    def _start_failed(self, slot: _Slot, reason: str) -> str:
        slot.start_error = reason
        slot.crashes += 1
        slot.restart_at = self._clock() + self._backoff(slot.crashes)
        self._note(slot.index, reason)
        return reason

    async def _stop_all(self, processes: list[_Process]) -> list[int]:
        """Stop these concurrently; returns the indexes that had to be SIGKILLed."""
        if not processes:
            return []
        killed = await asyncio.gather(*(self._stop(p) for p in processes))
        return sorted((p.index for p, k in zip(processes, killed) if k), reverse=True)

    async def _stop(self, p: _Process) -> bool:
        """SIGTERM the replica's process group, SIGKILL it after the grace period (-> True)."""
        # Kept in _stopping until dead, so close() finishes the job if this task is cancelled.
        self._stopping.add(p)
        deadline = time.monotonic() + self.stop_grace_period
        if p.alive:
            self._note(p.index, f"sending SIGTERM to process group {p.pid}")
            _signal_group(p.pid, signal.SIGTERM)
            await asyncio.wait([p.exited], timeout=self.stop_grace_period)
        # The leader may be gone while processes it started linger in its group.
        while (p.alive or _group_exists(p.pid)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        killed = p.alive or _group_exists(p.pid)
        if killed:
            self._note(p.index, f"still running after {self.stop_grace_period:g} s: sending SIGKILL")
            _signal_group(p.pid, signal.SIGKILL)
        code, _ = await p.exited
        self._stopping.discard(p)
        self._note(p.index, f"stopped ({_describe_exit(code)})")
        return killed

    def _log_path(self, index: int) -> Path:
        return self.log_dir / f"{self.name}.{index}.log"

    def _note(self, index: int, message: str) -> None:
        """Append a line of our own to the replica's log, so the log tells the whole story."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self._log_path(index), "a", encoding="utf-8") as log:
                log.write(f"[docktor {stamp}] replica {index}: {message}\n")
        except OSError:
            pass  # a full disk must not stop the executor from stopping processes


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def _summarize(problems: list[tuple[int, str]]) -> str:
    """``replicas 1, 2, 3: command not found: foo`` rather than the same reason three times."""
    by_reason: dict[str, list[int]] = {}
    for index, reason in problems:
        by_reason.setdefault(reason, []).append(index)
    return "; ".join(
        (f"replica {ix[0]}" if len(ix) == 1 else "replicas " + ", ".join(map(str, ix))) + reason
        for reason, ix in by_reason.items()
    )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
