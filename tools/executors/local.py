"""The local executor: a service's replicas are processes the daemon starts and watches.

Docktor's embedded default (``executor: local``, used by ``make demo``): N copies of ``command``,
like a Procfile runner or supervisor's ``numprocs``; replica *i* gets ``DOCKTOR_SERVICE=<name>``
and ``DOCKTOR_REPLICA=<i>`` and appends its output to ``<state_dir>/logs/<name>.<i>.log``.
``docs/executors.md`` tells the whole story. Here: :class:`LocalExecutor`, which keeps a slot
per replica and restarts a crashed one like Docker's ``restart: on-failure`` (back-off 1 s, 2 s,
4 s ... up to 60 s, reset after 10 s up; exit code 0 is done, not restarted), at the daemon's
tick, never in the background. Beside it:

* :mod:`.local_settings`: the settings, and the environment replicas inherit (an allow-list,
  never Docktor's own credentials);
* :mod:`.local_replicas`: the processes, started with the service's marks, recognised by them
  (this user's, carrying ``DOCKTOR_OWNER``) before any signal, and stopped (SIGTERM, the grace
  period, SIGKILL) with everything they started, even what left their session;
* :mod:`.local_cpu`: which replicas a scale-in removes first (not running, not measured, idlest);
* :mod:`.local_records`: the record and lock in ``<state_dir>/local/``, by which replicas outlive
  a daemon killed hard (as containers outlive dockerd with live-restore) and the next one adopts
  them and comes back at the count it had, never twice. ``close()`` stops every replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable
from fnmatch import fnmatchcase

from docktor.tools.executors.local_cpu import CpuMeter, choose_victims
from docktor.tools.executors.local_records import Recorded, RecordedReplica, ReplicaRecords, UnsafeRecords, adopt
from docktor.tools.executors.local_replicas import (
    Replica,
    ReplicaLog,
    Replicas,
    Slot,
    Stopped,
    describe_exit,
    program_problem,
    summarize_problems,
)
from docktor.tools.executors.local_settings import LocalSettings, replica_environment
from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    RemovedReplica,
    ReplicaStatus,
    ScaleOutcome,
    Unworkable,
)

#: how long new replicas must stay up before ``scale`` calls them started
SETTLE_S = 0.5
#: first restart delay after a crash; doubles per consecutive crash of the same slot
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
#: a replica up this long is healthy again: its slot's back-off and failed mark reset
STABLE_AFTER_S = 10.0


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
        self.log = ReplicaLog(context.state_dir / "logs", self.name)
        self.records = ReplicaRecords(context.state_dir, self.name)
        self.replicas = Replicas(
            self.name, self.owner, self.command, self.env, self.working_dir, self.log, self.stop_grace_period, clock
        )
        self._desired = 0
        self._slots: dict[int, Slot] = {}
        #: processes asked to stop but possibly not dead yet (a cancelled scale leaves some here)
        self._stopping: set[Replica] = set()
        #: stops running on their own (adoption, what a crashed replica left behind), by process
        self._background: dict[Replica, asyncio.Task[Stopped]] = {}
        self._cpu = CpuMeter()
        self._lock = asyncio.Lock()
        self._prepared = False
        #: why the records were last refused (said once in the log; every call is refused until fixed)
        self._refused: str | None = None
        self._closed = False

    @classmethod
    def check(cls, settings: LocalSettings, context: Context) -> list[str]:
        """The program exists where a replica's start would look (else :class:`Unworkable`); no
        credential of Docktor's is matched by ``env_passthrough`` (a warning)."""
        found: list[str] = []
        working_dir = context.path(settings.working_dir) if settings.working_dir is not None else context.base_dir
        if problem := program_problem(settings.command, replica_environment(settings, context.secret_env), working_dir):
            found.append(Unworkable(problem))
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
            victims = choose_victims(list(self._slots.values()), len(self._slots) - replicas, self._cpu) if replicas < len(self._slots) else []
            for slot, _ in victims:
                del self._slots[slot.index]
            free = (i for i in range(1, replicas + len(self._slots) + 2) if i not in self._slots)
            while len(self._slots) < replicas:
                index = next(free)
                self._slots[index] = Slot(index)
            self._desired = replicas

            stopping = [(slot.process, why) for slot, why in victims if slot.process is not None]
            self._stopping.update(p for p, _ in stopping)
            self._save()
            stopped: list[Stopped] = []
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
                        problems.append((p.index, f" {describe_exit(code)} right after start"))
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
                return ScaleOutcome(False, summarize_problems(problems), self._ms(began), running, removed)
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
            self.records.release()

    # ------------------------------------------------------------------ adoption

    async def _prepare(self) -> None:
        """Once: own this service's replicas (the lock), then adopt what an earlier daemon left."""
        if self._prepared:
            return
        try:
            self.records.lock()
            recorded, problems = self.records.load()
        except ExecutorError as e:
            self.records.release()
            if isinstance(e, UnsafeRecords) and str(e) != self._refused:  # said once, not at every tick
                self._refused = str(e)
                self.log.note(0, str(e))
            raise
        for problem in problems:
            self.log.note(0, problem)
        self._prepared = True
        self._adopt(recorded)

    def _adopt(self, recorded: Recorded) -> None:
        """Take over what the record names (:func:`.local_records.adopt`), then the slots up to its count."""
        found = adopt(recorded, self.replicas, self.records.path, spec=self.spec)
        self._slots = {index: Slot(index, process=p) for index, p in found.kept.items()}
        for p in found.to_stop:
            self._stop_in_background(p)
        # back to the count the earlier daemon had: the missing slots start at the first status()
        self._desired = recorded.desired
        free = (i for i in range(1, self._desired + len(self._slots) + 2) if i not in self._slots)
        while len(self._slots) < self._desired:
            index = next(free)
            self._slots[index] = Slot(index, restart_at=self._clock())
        for index in sorted(self._slots)[self._desired :]:  # more adopted than recorded: keep the count
            slot = self._slots.pop(index)
            if slot.process is not None:
                self._stop_in_background(slot.process)
        self._save()

    def _stop_in_background(self, p: Replica) -> None:
        task = asyncio.create_task(self._stop(p))
        self._background[p] = task
        task.add_done_callback(lambda _: self._background.pop(p, None))

    def _save(self) -> None:
        """Record the replicas (and those being stopped); a full disk must not stop scaling."""
        if not self._prepared:
            return
        rows = [
            RecordedReplica(slot=p.index, pid=p.pid, start_ticks=p.start_ticks, instance=p.instance)
            for s in self._slots.values() if (p := s.process) is not None and p.alive
        ] + [
            RecordedReplica(slot=p.index, pid=p.pid, start_ticks=p.start_ticks, stopping=True, instance=p.instance)
            for p in self._stopping if p.alive
        ]
        if problem := self.records.save(self._desired, self.spec, rows):
            self.log.note(0, problem)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _ms(began: float) -> float:
        return (time.monotonic() - began) * 1000.0

    def _running(self) -> int:
        return sum(1 for s in self._slots.values() if s.process is not None and s.process.alive)

    def _measure(self) -> None:
        self._cpu.measure({s.index: s.process for s in self._slots.values() if s.process is not None and s.process.alive})

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
            detail=summarize_problems(notes),
        )

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
                self.log.note(slot.index, f"{describe_exit(code)}")
                if self.replicas.left(p) or self.replicas.strays(p):
                    # what the replica started is orphaned now: it goes the way the replica went
                    self.log.note(slot.index, "processes it started are still running: stopping them")
                    self._stop_in_background(p)
                if code == 0:
                    slot.completed = True
                    continue
                ran = exited_at - p.started_at
                slot.crashes = 1 if ran >= self.stable_after else slot.crashes + 1
                slot.failure = describe_exit(code)
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

    async def _start_missing(self) -> tuple[list[Replica], list[tuple[int, str]]]:
        started: list[Replica] = []
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

    async def _start(self, slot: Slot) -> str | None:
        """Start the slot's replica. Returns a one-line reason when the command cannot run."""
        slot.restart_at = None
        started = await self.replicas.start(slot.index)
        if isinstance(started, str):
            slot.start_error = started
            slot.crashes += 1
            slot.restart_at = self._clock() + self._backoff(slot.crashes)
            self.log.note(slot.index, started)
            return started
        slot.start_error = None
        slot.process = started
        self._save()  # recorded before anything else can happen to the daemon
        self.log.note(slot.index, f"started, pid {started.pid}")
        return None

    async def _stop_all(self, processes: list[Replica]) -> list[Stopped]:
        """Stop these concurrently; one result per process, in order."""
        if not processes:
            return []
        return list(await asyncio.gather(*(self._stop(p) for p in processes)))

    async def _stop(self, p: Replica) -> Stopped:
        # Kept in _stopping until dead, so close() finishes the job if this task is cancelled.
        self._stopping.add(p)
        stopped = await self.replicas.stop(p)
        self._stopping.discard(p)
        self._save()
        return stopped


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"
