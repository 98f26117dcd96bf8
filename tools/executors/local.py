"""The local executor: a service's replicas are processes the daemon starts and watches.

Docktor's embedded default (``executor: local``, used by ``make demo``). It runs N copies of
``command`` like a Procfile runner or supervisor's ``numprocs``: replica *i* (1-based) gets
``DOCKTOR_SERVICE=<name>`` and ``DOCKTOR_REPLICA=<i>`` in its environment and appends stdout and
stderr to ``<state_dir>/logs/<name>.<i>.log``.

Environment
    A replica does not inherit the daemon's environment: it gets ``env`` from its settings, plus
    the variables the allow-list names (:data:`DEFAULT_PASSTHROUGH` and ``env_passthrough``),
    minus Docktor's own credentials (``Context.secret_env``: the LLM key, sources' ``*_env``),
    which no pattern lets through.

Processes and signals
    Commands are started with :func:`asyncio.create_subprocess_exec` (never a shell), stdin from
    ``/dev/null``, each in a new session and process group (``start_new_session=True``) so Ctrl-C
    in the daemon's terminal reaches only the daemon. Stopping signals the replica's whole process
    group: SIGTERM, then SIGKILL once ``stop_grace_period`` has passed; what a crashed replica
    left behind in its group is stopped the same way. Replicas being stopped are stopped
    concurrently.

Scale-in
    The replicas that go first are those not running (crashed, finished), then those that have
    not been measured yet (started since the last check), then the lowest CPU over the last check
    interval (whole percent; the CPU of everything in the replica's session), ties going to the
    highest number. The outcome says which ones went, why, and how each stopped.

Restarts (like Docker's ``restart: on-failure``)
    A replica that exits on its own with a non-zero code (or is killed by a signal nobody here
    sent) is *failed*: it does not count as running, and :meth:`LocalExecutor.status` restarts it
    once its slot's back-off has passed (1 s, 2 s, 4 s ... capped at 60 s). The back-off and the
    failed mark reset once a replica has stayed up for 10 s, as Docker resets its restart delay.
    A replica that exits with code 0 finished its work: it is neither restarted nor failed, and
    the next :meth:`~LocalExecutor.scale` starts it again. Restarts happen when ``status()`` or
    ``scale()`` is called, i.e. at the daemon's tick, never in the background.

When the daemon dies hard, and the next one (Linux)
    Replicas outlive a daemon that is killed (``kill -9``, the OOM killer), as containers outlive
    dockerd with live-restore: a crash of the autoscaler must not kill work in flight. Every
    replica's pid and start time (its identity: pids are reused) are kept in
    ``<state_dir>/local/<name>.json``, rewritten atomically at every change. The next executor for
    the same state dir and service takes ``<name>.lock`` (an flock: two daemons never run the same
    replicas) and then, before anything else:

    * adopts each recorded replica that is still the same process (same pid, start time and boot)
      into its slot, and watches it with a pidfd (its exit code is unknown: it is not our child);
    * stops, with SIGTERM and the grace period, recorded replicas that were being stopped, or that
      run a command/environment the config no longer gives, and whatever is left in the process
      group of a recorded replica that died;
    * stops any process carrying this service's ``DOCKTOR_OWNER`` marker that the file does not
      list (a daemon killed between starting a replica and recording it);
    * starts the missing replicas up to the recorded count, so the service comes back at the
      count it had, never twice.

    ``close()`` (``daemon stop``, Ctrl-C) stops every replica and records zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

import docktor.tools.executors.procfs as procfs
from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    PluginSettings,
    RemovedReplica,
    ReplicaStatus,
    ScaleOutcome,
    Seconds,
)

#: how long new replicas must stay up before ``scale`` calls them started
SETTLE_S = 0.5
#: first restart delay after a crash; doubles per consecutive crash of the same slot
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
#: a replica up this long is healthy again: its slot's back-off and failed mark reset
STABLE_AFTER_S = 10.0
#: how often an adopted replica (not our child) is checked when no pidfd can watch it
ADOPTED_POLL_S = 0.5
#: shortest interval a CPU figure is measured over (the daemon's ticks are at least this far apart)
CPU_WINDOW_S = 1.0
#: a scan of /proc this recent serves every service's measurement (they tick at the same instants)
SCAN_REUSE_S = 0.25
#: how often a stop looks for processes left in a replica's group once the replica itself exited
GROUP_POLL_S = 0.1
STATE_VERSION = 1

#: Variables a replica inherits from the daemon even when ``env_passthrough`` is empty: what a
#: program needs to find itself, its locale and its time zone, and Python's own switches. Nothing
#: here names a credential; a proxy URL (``HTTP_PROXY``) can hold one, so it is not inherited.
DEFAULT_PASSTHROUGH: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR",
    "PYTHON*", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR",
)

_ENV_PATTERN = re.compile(r"^[A-Za-z0-9_*?]+$")


def _split_command(value: Any) -> Any:
    return shlex.split(value) if isinstance(value, str) else value


def _check_pattern(value: str) -> str:
    if not _ENV_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a variable name or a pattern such as MYAPP_* (letters, digits, _, * and ?)")
    return value


class LocalSettings(PluginSettings):
    """``executor: local``: run ``command`` N times as processes of the daemon's."""

    kind: Literal["local"]
    #: the replica's program and arguments: a list, or a string split like a shell would (no shell runs it)
    command: Annotated[list[str], BeforeValidator(_split_command), Field(min_length=1)]
    #: environment variables for the replicas (they win over inherited ones)
    env: dict[str, str] = Field(default_factory=dict)
    #: more of the daemon's variables replicas inherit, by name or pattern (``MYAPP_*``), on top of
    #: :data:`DEFAULT_PASSTHROUGH`; Docktor's own credentials are never inherited
    env_passthrough: list[Annotated[str, AfterValidator(_check_pattern)]] = Field(default_factory=list)
    #: the replicas' working directory, relative to the config file's folder (default: that folder)
    working_dir: Path | None = None
    #: SIGTERM, then SIGKILL after this long
    stop_grace_period: Seconds = 10.0


def replica_environment(
    settings: LocalSettings, secret_env: frozenset[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What every replica of a service inherits and is given (before its ``DOCKTOR_*`` variables)."""
    environ = os.environ if environ is None else environ
    patterns = (*DEFAULT_PASSTHROUGH, *settings.env_passthrough)
    inherited = {
        k: v for k, v in environ.items() if k not in secret_env and any(fnmatchcase(k, p) for p in patterns)
    }
    return {**inherited, **settings.env}


# --------------------------------------------------------------------------- bookkeeping


@dataclass(eq=False)
class _Process:
    index: int
    pid: int
    #: start time in clock ticks since boot: with the pid, its identity (None: unknown)
    start_ticks: int | None
    started_at: float
    #: resolves to (exit code or None when unknown, clock time of exit) once the process is gone
    exited: asyncio.Task[tuple[int | None, float]]
    #: started by an earlier daemon and adopted: not our child
    adopted: bool = False

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


@dataclass(frozen=True)
class _Stopped:
    killed: bool
    how: str


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited, exit code unknown (adopted: not a child of this daemon)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class LocalExecutor(Executor[LocalSettings]):
    """Replicas of one service as processes of the daemon. Not thread-safe; one event loop."""

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
        self.env = replica_environment(settings, context.secret_env)
        self.working_dir = context.path(settings.working_dir) if settings.working_dir is not None else context.base_dir
        self.log_dir = context.state_dir / "logs"
        self.state_path = context.state_dir / "local" / f"{self.name}.json"
        self.stop_grace_period = settings.stop_grace_period
        self.settle = settle
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.stable_after = stable_after
        self._clock = clock
        #: marks this service's replicas (state dir + name), so a restart finds unrecorded ones
        self.owner = hashlib.sha256(f"{context.state_dir.resolve()}\0{self.name}".encode()).hexdigest()[:16]
        #: what the replicas run: adopted replicas must run the same, or they are replaced
        self.spec = hashlib.sha256(
            json.dumps([self.command, sorted(settings.env.items()), settings.env_passthrough, str(self.working_dir)]).encode()
        ).hexdigest()[:16]
        self._desired = 0
        self._slots: dict[int, _Slot] = {}
        #: processes asked to stop but possibly not dead yet (a cancelled scale leaves some here)
        self._stopping: set[_Process] = set()
        #: stops running on their own (adoption, what a crashed replica left behind), by process
        self._background: dict[_Process, asyncio.Task[_Stopped]] = {}
        #: per pid: (monotonic time, CPU ticks of its session) at the last measurement, and the last
        #: figure (CPU percent, over how many seconds)
        self._cpu_seen: dict[int, tuple[float, int]] = {}
        self._cpu_last: dict[int, tuple[float, float]] = {}
        self._lock = asyncio.Lock()
        self._lock_fd: int | None = None
        self._prepared = False
        self._closed = False

    @classmethod
    def check(cls, settings: LocalSettings, context: Context) -> list[str]:
        found = []
        for pattern in settings.env_passthrough:
            secrets = sorted(n for n in context.secret_env if fnmatchcase(n, pattern))
            if secrets:
                found.append(
                    f"env_passthrough {pattern!r} matches {', '.join(secrets)}, which holds a credential of Docktor's "
                    "own (llm.api_key_env or a source's *_env): it is never passed to replicas"
                )
        return found

    # ------------------------------------------------------------------ Executor interface

    async def status(self) -> ReplicaStatus:
        async with self._lock:
            if self._closed:
                raise ExecutorError(f"local executor for {self.name!r} is closed")
            await self._prepare()
            await self._reconcile()
            self._measure()  # each tick is a CPU measurement, which scale-in uses to find idle replicas
            return self._status()

    async def scale(self, replicas: int) -> ScaleOutcome:
        began = time.monotonic()
        if replicas < 0:
            return ScaleOutcome(False, f"cannot scale to {replicas} replicas", 0.0, None)
        async with self._lock:
            if self._closed:
                return ScaleOutcome(False, "executor is closed", self._ms(began), 0)
            try:
                await self._prepare()
            except ExecutorError as e:
                return ScaleOutcome(False, str(e), self._ms(began), None)
            before = self._running()
            # A scale is a fresh start: crash records and "finished" replicas are forgotten, and
            # every slot up to the target is started now (back-off or not): the caller asked.
            for slot in self._slots.values():
                slot.failure = None
                slot.completed = False
                slot.start_error = None
            victims = self._choose_victims(len(self._slots) - replicas) if replicas < len(self._slots) else []
            for slot, _ in victims:
                del self._slots[slot.index]
            free = (i for i in range(1, replicas + len(self._slots) + 2) if i not in self._slots)
            while len(self._slots) < replicas:
                index = next(free)
                self._slots[index] = _Slot(index)
            self._desired = replicas

            stopping = [(slot.process, why) for slot, why in victims if slot.process is not None]
            self._stopping.update(p for p, _ in stopping)
            self._save()
            stopped: list[_Stopped] = []
            # stops run while the new replicas start; awaited (or cancelled) below
            stop_task = asyncio.create_task(self._stop_all([proc for proc, _ in stopping]))  # noqa: RUF006
            try:
                started, problems = await self._start_missing()
                fresh = [p for p in started if p.alive]
                if fresh:
                    await asyncio.wait([p.exited for p in fresh], timeout=self.settle)
                for p in started:
                    if not p.alive:
                        code, _ = p.exited.result()
                        problems.append((p.index, f" {_describe_exit(code)} right after start"))
                stopped = await stop_task
            finally:
                if not stop_task.done():
                    stop_task.cancel()
            await self._reconcile()
            self._save()

            running = self._running()
            removed = tuple(
                RemovedReplica(str(p.index), why, result.how) for (p, why), result in zip(stopping, stopped)
            ) + tuple(RemovedReplica(str(slot.index), why, "was not running") for slot, why in victims if slot.process is None)
            if problems:
                return ScaleOutcome(False, _summarize(problems), self._ms(began), running, removed)
            gone = sorted((slot.index for slot, _ in victims), reverse=True)
            killed = sorted((p.index for (p, _), r in zip(stopping, stopped) if r.killed), reverse=True)
            what = []
            if started:
                what.append("started " + ", ".join(str(p.index) for p in started))
            if gone:
                what.append("stopped " + ", ".join(map(str, gone)))
            if killed:
                what.append(f"{', '.join(map(str, killed))} ignored SIGTERM for {self.stop_grace_period:g} s: SIGKILL")
            verb = f"{before} -> {_replicas(replicas)}" if what else f"already at {_replicas(replicas)}"
            message = verb + (f" ({'; '.join(what)})" if what else "")
            return ScaleOutcome(True, message, self._ms(began), running, removed)

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._desired = 0
            processes = [s.process for s in self._slots.values() if s.process is not None]
            self._slots.clear()
            # those a background stop already handles are waited for, not signalled twice
            left = [p for p in dict.fromkeys(processes + list(self._stopping)) if p not in self._background]
            await asyncio.gather(self._stop_all(left), *self._background.values(), return_exceptions=True)
            if self._prepared:
                self._save()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # ------------------------------------------------------------------ adoption

    async def _prepare(self) -> None:
        """Once: own this service's replicas (the lock), then adopt what an earlier daemon left."""
        if self._prepared:
            return
        lock_path = self.state_path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ExecutorError(f"cannot open {lock_path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ExecutorError(
                f"another Docktor process runs the local replicas of {self.name!r} (it holds {lock_path})"
            ) from None
        self._lock_fd = fd
        self._prepared = True
        self._adopt()

    def _adopt(self) -> None:
        state = self._load()
        boot = procfs.boot_id()
        recorded = state.get("replicas", []) if state.get("boot_id") == boot and boot is not None else []
        same_spec = state.get("spec") == self.spec
        known: set[int] = set()
        for entry in recorded:
            try:
                index, pid, ticks, stopping = int(entry["slot"]), int(entry["pid"]), entry.get("start_ticks"), bool(entry.get("stopping"))
            except (KeyError, TypeError, ValueError):
                continue
            known.add(pid)
            if isinstance(ticks, int) and procfs.same_process(pid, ticks):
                p = self._watch_adopted(index, pid, ticks)
                if same_spec and not stopping and index not in self._slots:
                    self._slots[index] = _Slot(index, process=p)
                    self._note(index, f"adopted pid {pid}, left running by an earlier Docktor")
                else:
                    why = "it was being stopped" if stopping else "the command or environment changed"
                    self._note(index, f"stopping pid {pid}, left by an earlier Docktor: {why}")
                    self._stop_in_background(p)
            elif _replica_alive(pid):
                self._note(index, f"replica pid {pid} is gone, but processes it started remain: stopping them")
                self._stop_in_background(self._watch_adopted(index, pid, None, gone=True))
        # a daemon killed between starting a replica and recording it leaves one nobody lists
        marker = f"DOCKTOR_OWNER={self.owner}"
        for info in procfs.processes():
            if info.sid == info.pid and info.pid not in known and not info.zombie and procfs.environ_has(info.pid, marker):
                self._note(0, f"stopping pid {info.pid}: a replica of {self.name!r} no record lists")
                self._stop_in_background(self._watch_adopted(0, info.pid, info.start_ticks))
        # back to the count the earlier daemon had: the missing slots start at the first status()
        desired = state.get("desired", 0)
        self._desired = desired if isinstance(desired, int) and desired >= 0 else 0
        free = (i for i in range(1, self._desired + len(self._slots) + 2) if i not in self._slots)
        while len(self._slots) < self._desired:
            index = next(free)
            self._slots[index] = _Slot(index, restart_at=self._clock())
        for index in sorted(self._slots)[self._desired :]:  # more adopted than recorded: keep the count
            slot = self._slots.pop(index)
            if slot.process is not None:
                self._stop_in_background(slot.process)
        self._save()

    def _watch_adopted(self, index: int, pid: int, ticks: int | None, *, gone: bool = False) -> _Process:
        """A process started by an earlier daemon, watched through a pidfd (or by polling /proc)."""

        async def watch() -> tuple[int | None, float]:
            if not gone:
                await _wait_exit(pid, ticks)
            return None, self._clock()

        return _Process(index, pid, ticks, self._clock() - self.stable_after, asyncio.create_task(watch()), adopted=True)

    def _stop_in_background(self, p: _Process) -> None:
        task = asyncio.create_task(self._stop(p))
        self._background[p] = task
        task.add_done_callback(lambda _: self._background.pop(p, None))

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._note(0, f"ignoring unreadable {self.state_path}: {e}")
            return {}
        return data if isinstance(data, dict) and data.get("version") == STATE_VERSION else {}

    def _save(self) -> None:
        """Record the replicas (and those being stopped) atomically; a full disk must not stop scaling."""
        if not self._prepared:
            return
        rows = [
            {"slot": s.index, "pid": s.process.pid, "start_ticks": s.process.start_ticks, "stopping": False}
            for s in self._slots.values() if s.process is not None and s.process.alive
        ] + [
            {"slot": p.index, "pid": p.pid, "start_ticks": p.start_ticks, "stopping": True}
            for p in self._stopping if p.alive
        ]
        data = {
            "version": STATE_VERSION, "service": self.name, "boot_id": procfs.boot_id(), "spec": self.spec,
            "daemon_pid": os.getpid(), "desired": self._desired, "replicas": sorted(rows, key=lambda r: (r["slot"], r["stopping"])),
        }
        tmp = self.state_path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as e:
            self._note(0, f"cannot record replicas in {self.state_path}: {e.strerror or e}")

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

    def _measure(self) -> tuple[dict[int, float], float | None]:
        """Per running slot: CPU percent of its session since the last measurement, and the longest
        interval measured over (None when nothing was measured yet)."""
        live = {s.index: s.process for s in self._slots.values() if s.process is not None and s.process.alive}
        # a scan of /proc another service's executor made a moment ago is as good as a fresh one,
        # timed by when it was made
        now, scan = procfs.recent_scan(SCAN_REUSE_S)
        sessions = procfs.by_session({p.pid for p in live.values()}, scan)
        cpu: dict[int, float] = {}
        interval: float | None = None
        for index, p in live.items():
            members = sessions.get(p.pid) or []
            if not members:
                continue
            ticks = sum(m.cpu_ticks for m in members)
            previous = self._cpu_seen.get(p.pid)
            if previous is None:
                self._cpu_seen[p.pid] = (now, ticks)
            elif now - previous[0] >= CPU_WINDOW_S:
                elapsed = now - previous[0]
                self._cpu_seen[p.pid] = (now, ticks)
                self._cpu_last[p.pid] = (max(0.0, (ticks - previous[1]) / procfs.CLOCK_TICKS / elapsed * 100.0), elapsed)
            # a measurement sooner than CPU_WINDOW_S after the last repeats its figure: too short to mean much
            if p.pid in self._cpu_last:
                cpu[index], elapsed = self._cpu_last[p.pid]
                interval = max(interval or 0.0, elapsed)
        for gone in set(self._cpu_seen) - {p.pid for p in live.values()}:
            self._cpu_seen.pop(gone, None)
            self._cpu_last.pop(gone, None)
        return cpu, interval

    def _choose_victims(self, count: int) -> list[tuple[_Slot, str]]:
        """The ``count`` slots to remove, each with the reason it was chosen (see the module doc)."""
        cpu, interval = self._measure()

        def rank(slot: _Slot) -> tuple[int, int, int]:
            if slot.process is None or not slot.process.alive:
                return (0, 0, -slot.index)
            if slot.index not in cpu:
                return (1, 0, -slot.index)
            return (2, int(cpu[slot.index]), -slot.index)

        ordered = sorted(self._slots.values(), key=rank)
        chosen, kept = ordered[:count], ordered[count:]
        kept_cpu = ", ".join(f"{s.index}: {cpu[s.index]:.1f}%" for s in sorted(kept, key=lambda s: s.index) if s.index in cpu)
        out = []
        for slot in chosen:
            r = rank(slot)
            if r[0] == 0:
                why = "not running"
            elif r[0] == 1:
                why = "no CPU reading yet (started since the last check)"
            else:
                why = f"lowest CPU: {cpu[slot.index]:.1f}% over the last {interval or 0:.1f} s"
                why += f" (kept {kept_cpu})" if kept_cpu else ""
            out.append((slot, why))
        return out

    async def _reconcile(self) -> None:
        """Notice exits, restart failed slots whose back-off has passed, clear recovered ones."""
        now = self._clock()
        changed = False
        for slot in self._slots.values():
            p = slot.process
            if p is not None and not p.alive:
                code, exited_at = p.exited.result()
                slot.process = None
                changed = True
                self._note(slot.index, f"{_describe_exit(code)}")
                if _replica_alive(p.pid):
                    # what the replica started is orphaned now: it goes the way the replica went
                    self._note(slot.index, "processes it started are still running: stopping them")
                    self._stop_in_background(p)
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
                changed = True
        if changed:
            self._save()

    def _backoff(self, crashes: int) -> float:
        return min(self.restart_backoff_max, self.restart_backoff * 2.0 ** max(0, crashes - 1))

    async def _start_missing(self) -> tuple[list[_Process], list[tuple[int, str]]]:
        started: list[_Process] = []
        problems: list[tuple[int, str]] = []
        for i in sorted(self._slots):
            slot = self._slots[i]
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
        env = {
            **self.env,
            "DOCKTOR_SERVICE": self.name,
            "DOCKTOR_REPLICA": str(slot.index),
            "DOCKTOR_OWNER": self.owner,
        }
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
            return self._start_failed(slot, f"command not found: {program}")
        except PermissionError:
            return self._start_failed(slot, f"command not executable: {program} (permission denied)")
        except OSError as e:
            return self._start_failed(slot, f"cannot start {program}: {e.strerror or e}")
        except ValueError as e:  # e.g. a NUL byte in an argument or an env value
            return self._start_failed(slot, f"cannot start {program}: {e}")

        info = procfs.proc_info(proc.pid)

        async def watch() -> tuple[int | None, float]:
            code = await proc.wait()
            return code, self._clock()

        slot.start_error = None
        slot.process = _Process(
            slot.index, proc.pid, info.start_ticks if info else None, self._clock(), asyncio.create_task(watch())
        )
        self._save()  # recorded before anything else can happen to the daemon
        self._note(slot.index, f"started, pid {proc.pid}")
        return None

    def _start_failed(self, slot: _Slot, reason: str) -> str:
        slot.start_error = reason
        slot.crashes += 1
        slot.restart_at = self._clock() + self._backoff(slot.crashes)
        self._note(slot.index, reason)
        return reason

    async def _stop_all(self, processes: list[_Process]) -> list[_Stopped]:
        """Stop these concurrently; one result per process, in order."""
        if not processes:
            return []
        return list(await asyncio.gather(*(self._stop(p) for p in processes)))

    async def _stop(self, p: _Process) -> _Stopped:
        """SIGTERM the replica's process group; SIGKILL what is left of it after the grace period."""
        # Kept in _stopping until dead, so close() finishes the job if this task is cancelled.
        self._stopping.add(p)
        began = time.monotonic()
        deadline = began + self.stop_grace_period
        was_alive = p.alive
        if was_alive or _replica_alive(p.pid):
            self._note(p.index, f"sending SIGTERM to process group {p.pid}")
            _signal_replica(p.pid, signal.SIGTERM)
        if p.alive:
            await asyncio.wait([p.exited], timeout=self.stop_grace_period)
        # The leader may be gone while processes it started linger in its group.
        while _replica_alive(p.pid) and time.monotonic() < deadline:
            await asyncio.sleep(GROUP_POLL_S)
        killed = p.alive or _replica_alive(p.pid)
        if killed:
            self._note(p.index, f"still running after {self.stop_grace_period:g} s: sending SIGKILL")
            _signal_replica(p.pid, signal.SIGKILL)
        code, _ = await p.exited
        self._stopping.discard(p)
        took = time.monotonic() - began
        self._note(p.index, f"stopped ({_describe_exit(code)})")
        self._save()
        if killed:
            return _Stopped(True, f"ignored SIGTERM for {self.stop_grace_period:g} s: SIGKILL")
        if not was_alive:
            return _Stopped(False, "had already exited")
        return _Stopped(False, f"{_describe_exit(code)} {took:.1f} s after SIGTERM")

    def _log_path(self, index: int) -> Path:
        return self.log_dir / f"{self.name}.{index}.log"

    def _note(self, index: int, message: str) -> None:
        """Append a line of our own to the replica's log (index 0: the service's), so the log tells the whole story."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        who = f"replica {index}" if index else "executor"
        path = self._log_path(index) if index else self.log_dir / f"{self.name}.log"
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"[docktor {stamp}] {who}: {message}\n")
        except OSError:
            pass  # a full disk must not stop the executor from stopping processes


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


def _signal_replica(pid: int, sig: signal.Signals) -> None:
    """``sig`` to the replica's process group, and to anything of its session in a group of its own."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for member in procfs.by_session({pid})[pid] if procfs.available() else []:
        if member.pgid != pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, sig)


def _replica_alive(pid: int) -> bool:
    """Some process of the replica's session (or group, without /proc) has not exited.

    Zombies waiting for a reaper do not count: where nobody reaps orphans they never go away.
    """
    if procfs.available():
        return bool(procfs.by_session({pid})[pid])
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
