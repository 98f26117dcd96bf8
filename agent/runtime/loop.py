"""The decision loop: per service, every ``check_interval``, observe -> decide -> guard -> act -> record.

One asyncio task per service, each on its own drift-free schedule. A tick gathers the source and
the executor concurrently, each under its own deadline, so one slow or failing service (or one
slow source) never delays another service's ticks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from docktor.agent.config.model import DocktorConfig, ServiceConfig, SourceSpec
from docktor.agent.config.secrets import secret_env_names
from docktor.agent.core.decide import Decision, finish, plan, remember, step
from docktor.agent.core.guardrails import Envelope
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.redact import redact, redact_obj
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, Outcome, OutcomeRecord
from docktor.agent.runtime.persist import (
    Breaker,
    Identity,
    Pause,
    Restored,
    Snapshot,
    StateStore,
    capture,
    describe_ids,
    fold,
    read_log_tail,
    restore,
)
from docktor.agent.runtime.recorder import Recorder, write_status_file
from docktor.agent.timestamps import rfc3339
from docktor.tools.registry import executor_plugin, source_plugin
from docktor.tools.sdk import Context, Executor, ReplicaStatus, ScaleOutcome, Source, one_line

log = logging.getLogger("docktor")

#: ``state``: whether the daemon restores and saves each service's state (docs/operations.md)
StateMode = Literal["off", "read", "write"]
#: how long the executor's own record of its last scale may take to read at start
LAST_SCALED_TIMEOUT_S = 10.0
#: the status file is rewritten at most this often while decisions come in (``daemon status``
#: reads it); a write serializes every service, so one per decision grows with services squared
STATUS_EVERY_S = 0.25
#: a service's state file is rewritten at once when a cooldown clock, the back-off, failed reads,
#: the breaker or a pause changed, and otherwise at most this often: what changes every tick
#: (the stabilization window, the rate baselines) a restart rebuilds (persist.py says how)
STATE_EVERY_S = 5.0
#: the ``llm:`` keys that say where and how the model is reached: a reload that changes one starts
#: a new advisor, and every service again (their breakers and advice belong to the old endpoint).
#: The others (the allowance, when to ask, the prompt's budget) are read at every decision: a
#: reload changes them in place.
LLM_ENDPOINT_KEYS = ("provider", "base_url", "model", "api_key_env", "timeout")


def next_tick(start: float, interval: float, k: int, now: float) -> tuple[int, float]:
    """After tick ``k`` (due at ``start + k*interval``) ended at ``now``: the next tick's index
    and how long to wait for it.

    Drift-free: tick ``k`` is due at ``start + k*interval``, so a slow tick never shifts the
    later ones. A tick that overran its successor's slot (a slow scale command) is followed at
    once by one more, as Go's ``time.Ticker`` delivers the one tick it kept: what changed while
    the tick was busy is seen now, not up to an interval later. The other missed slots are
    dropped, never run back to back to catch up.
    """
    due = start + (k + 1) * interval
    if now < due:
        return k + 1, due - now
    # The slot that just passed is run now; the next one after it stays on the grid.
    return math.floor((now - start) / interval), 0.0


class ControlRefused(Exception):
    """A control request that cannot be done as asked (``code`` for the control channel)."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or [message]


@dataclass
class ServiceRunner:
    """Everything one service needs between ticks."""

    svc: ServiceConfig
    sources: list[tuple[SourceSpec, Source[Any]]]
    executor: Executor[Any]
    state: ServiceState = field(default_factory=ServiceState)
    last_status: ReplicaStatus | None = None
    last_observations: dict[str, float] = field(default_factory=dict)
    last_record: DecisionRecord | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)  # newest last, for the LLM's tools
    ticks: int = 0
    #: ``docktor pause``: decisions go on and are logged, nothing is executed
    pause: Pause | None = None
    #: what the state file's pieces were kept or discarded for (set at start and at a reload)
    identity: Identity | None = None
    restored: Restored | None = None
    #: one tick (or manual scale) at a time; state-file writes one at a time
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    save_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    save_error: str | None = None
    #: what the state file last written holds that a restart needs exactly (Snapshot.durable), and when
    saved_durable: tuple[Any, ...] | None = None
    saved_mono: float = -math.inf
    #: the service's own loop and its stop signal (a reload stops one service alone)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    target_lock: Any = None  # rundir.TargetLock while this process acts on the executor's target

    def target(self) -> str | None:
        try:
            return self.executor.target()
        except Exception as e:  # a plugin's bug must not stop the daemon; no target: no check
            log.warning("%s: executor target unknown: %s", self.svc.name, one_line(e))
            return None


class Daemon:
    """Runs every configured service. Used by ``daemon start``, ``decide --once`` and ``demo``."""

    def __init__(
        self,
        config: DocktorConfig,
        *,
        mode: str | None = None,
        log_path: Path | None = None,
        status_path: Path | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        state: StateMode = "off",
    ):
        self.config = config
        #: the command line's --advisory: kept across reloads (the config's mode is not)
        self.mode_override = mode
        self.mode = mode or config.mode
        self.state_dir = config.state_dir or config.base_dir / ".docktor"
        self.log = DecisionLog(
            log_path or self.state_dir / "decisions.jsonl", config.log.max_bytes, config.log.backups
        )
        self.recorder = Recorder(self.log, wall=wall, mono=mono)
        self.status_path = status_path
        self.status_error: str | None = None  # the last failed status-file write, for the log
        self._status_due: asyncio.TimerHandle | None = None  # the write that will carry the latest decisions
        self._status_written = -math.inf  # time.monotonic() of the last write
        self.wall, self.mono = wall, mono
        self.started_at = wall()
        self.runners: dict[str, ServiceRunner] = {}
        self.advisor: Any = None
        self.beside: Any = None  # AdvisorBeside: the LLM's calls, beside the loop
        self.on_record: list[Callable[[DecisionRecord], None]] = []
        self.on_tick: list[Callable[[str, float], None]] = []  # (service, seconds): the metrics' tick timer
        self.state_mode: StateMode = state
        self.store = StateStore(self.state_dir)
        self.phase = "starting"  # running, stopping: for ``daemon status`` while it stops
        self._running = False
        self._reloading = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    def _context(self, svc: ServiceConfig, config: DocktorConfig) -> Context:
        # secret_env: Docktor's own credentials, which the local executor keeps from its replicas
        return Context(
            service=svc.name, base_dir=config.base_dir, state_dir=self.state_dir, secret_env=secret_env_names(config)
        )

    def _runner(
        self, svc: ServiceConfig, reuse: ServiceRunner | None = None, config: DocktorConfig | None = None
    ) -> ServiceRunner:
        """A runner for ``svc`` of ``config`` (the running one by default); plugins whose kind and
        settings did not change are taken from ``reuse``."""
        context = self._context(svc, config or self.config)
        kept: dict[tuple[Any, ...], Source[Any]] = {} if reuse is None else {
            (s.name, s.kind, s.settings, s.primary): src for s, src in reuse.sources
        }
        sources: list[tuple[SourceSpec, Source[Any]]] = []
        for spec in svc.sources:
            same = kept.pop((spec.name, spec.kind, spec.settings, spec.primary), None)
            sources.append((spec, same if same is not None else source_plugin(spec.kind)(spec.settings, context)))
        if svc.executor is None:
            raise ValueError(f"service {svc.name!r} has no executor")  # the loader always sets one
        old = None if reuse is None or reuse.svc.executor is None else reuse.svc.executor
        same_executor = old is not None and (old.kind, old.settings) == (svc.executor.kind, svc.executor.settings)
        executor = reuse.executor if same_executor and reuse is not None else executor_plugin(svc.executor.kind)(svc.executor.settings, context)
        return ServiceRunner(svc, sources, executor)

    async def open(self) -> None:
        for svc in self.config.services:
            self.runners[svc.name] = self._runner(svc)
        self._open_advisor()
        if self.state_mode != "off":
            await self.restore_state(list(self.runners.values()))

    def _open_advisor(self) -> None:
        if self.config.llm.provider != "none":
            from docktor.agent.advisor.advisor import make_advisor
            from docktor.agent.runtime.beside import AdvisorBeside

            self.advisor = make_advisor(self.config.llm)
            self.beside = AdvisorBeside(self.advisor, _Tools(self), wall=self.wall, mono=self.mono)

    async def _close_advisor(self) -> None:
        if self.beside is not None:
            await self.beside.close()  # calls still in flight are cancelled: nobody waits for them
        if self.advisor is not None:
            try:
                await self.advisor.close()
            except Exception as e:
                log.warning("error while closing the LLM client: %s", e)
        self.advisor = self.beside = None

    def claim_targets(self, what: str) -> None:
        """Hold every executor's target for this process (:mod:`docktor.agent.runtime.rundir`):
        raises ``TargetBusy`` naming the one already held elsewhere (nothing is held then)."""
        self._claim(list(self.runners.values()), what)

    def _claim(self, runners: list[ServiceRunner], what: str) -> None:
        from docktor.agent.runtime.rundir import TargetBusy, lock_target

        taken: list[ServiceRunner] = []
        holder = {"what": what, "config": str(self.config.path.resolve()) if self.config.path else None}
        try:
            for r in runners:
                target = r.target()
                if target is None or (r.target_lock is not None and r.target_lock.target == target):
                    continue
                try:
                    lock = lock_target(target, holder)
                except TargetBusy as e:
                    raise TargetBusy(e.target, {**e.holder, "service": r.svc.name}) from None
                r.target_lock = lock
                taken.append(r)
        except BaseException:
            for r in taken:
                r.target_lock.release()
                r.target_lock = None
            raise

    async def close(self) -> None:
        self.phase = "stopping"
        # what the last ticks learnt, for the next start (they wrote it every few seconds only);
        # a daemon that never ticked (refused to start) leaves the file as the last one wrote it
        await asyncio.gather(*(self.save_state(r, force=True) for r in self.runners.values() if r.ticks and r.task is None))
        if self._status_due is not None:  # the last decisions, before the loop that would write them ends
            self.write_status()
        await self._close_advisor()
        closers: list[Awaitable[None]] = []
        for r in self.runners.values():
            closers.extend(self._close_plugins(r))
        results = await asyncio.gather(*closers, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                log.warning("error while closing: %s", res)
        for r in self.runners.values():
            if r.target_lock is not None:
                r.target_lock.release()
                r.target_lock = None
        self.log.close()

    @staticmethod
    def _close_plugins(runner: ServiceRunner, keep: ServiceRunner | None = None) -> list[Awaitable[None]]:
        """Close ``runner``'s plugins, except those ``keep`` took over."""
        kept = set() if keep is None else {id(src) for _, src in keep.sources} | {id(keep.executor)}
        closers: list[Awaitable[None]] = [source.close() for _, source in runner.sources if id(source) not in kept]
        if id(runner.executor) not in kept:
            closers.append(runner.executor.close())
        return closers

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every service until ``stop`` is set; the tick in progress finishes first."""
        self._running = True
        self.phase = "running"
        for r in self.runners.values():
            self._launch(r)
        try:
            await stop.wait()
        except asyncio.CancelledError:
            for r in self.runners.values():
                if r.task is not None:
                    r.task.cancel()
            raise
        finally:
            self._running = False
        self.phase = "stopping"
        await self._halt(list(self.runners.values()))

    def _launch(self, runner: ServiceRunner) -> None:
        runner.stop = asyncio.Event()
        runner.task = asyncio.create_task(self._service_loop(runner, runner.stop), name=runner.svc.name)

    async def _halt(self, runners: list[ServiceRunner]) -> None:
        """Stop the loops of ``runners`` once their tick in progress is done."""
        for r in runners:
            r.stop.set()
        tasks = [r.task for r in runners if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for r in runners:
            r.task = None

    async def run_once(self, *, dry_run: bool = False, window: float = 0.0) -> list[DecisionRecord]:
        """One decision for every service, concurrently.

        Rates need two readings: with ``window`` > 0 each service is read once, then decided on a
        second reading ``window`` seconds later (at most its check interval), so a one-shot
        decision sees ``queue.rate_in``/``rate_out`` like the daemon's ticks do.
        """
        records = list(await asyncio.gather(*(self._once(r, dry_run, window) for r in self.runners.values())))
        if self.beside is not None:
            # What the daemon would do next: the LLM's answer, applied at the tick it lands in.
            landed = await self.beside.settle(self.config.llm.timeout + 1.0)
            records += await asyncio.gather(*(self.tick(self.runners[name], dry_run=dry_run) for name in landed))
        return records

    async def _once(self, runner: ServiceRunner, dry_run: bool, window: float) -> DecisionRecord:
        wait = min(window, runner.svc.check_interval)
        if wait > 0:
            started = self.mono()
            observations, status, _ = await self.observe(runner)
            if status is not None:  # the first reading is history, as the previous tick's would be
                runner.state.history.append((started, observations))
            await asyncio.sleep(max(0.0, started + wait - self.mono()))
        return await self.tick(runner, dry_run=dry_run)

    async def _service_loop(self, runner: ServiceRunner, stop: asyncio.Event) -> None:
        interval = runner.svc.check_interval
        start = self.mono()
        k = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.tick(runner)
            except Exception as e:  # a bug in one tick must not end the service's loop
                log.exception("tick of %s failed: %s", runner.svc.name, e)
            for hook in self.on_tick:
                hook(runner.svc.name, time.monotonic() - started)
            k, delay = next_tick(start, interval, k, self.mono())
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ state across restarts

    def _identity(self, runner: ServiceRunner) -> Identity:
        return Identity.of(runner.svc, runner.target(), self.config.llm)

    def _snapshot(self, runner: ServiceRunner) -> Snapshot:
        sources: dict[str, dict[str, Any]] = {}
        for spec, source in runner.sources:
            try:
                data = source.snapshot()
            except Exception as e:  # a plugin's bug costs its baseline, never the tick
                log.warning("%s: source %s: snapshot failed: %s", runner.svc.name, spec.name, one_line(e))
                continue
            if data is not None:
                sources[spec.name] = data
        breaker = None
        if self.advisor is not None:
            failures, open_until, last_error = self.advisor.breaker_state(runner.svc.name)
            breaker = Breaker(failures, open_until, last_error) if failures else None
        assert runner.identity is not None
        return Snapshot(runner.identity, runner.state, sources, breaker, runner.pause)

    async def save_state(self, runner: ServiceRunner, *, force: bool = False) -> None:
        """Write the service's state file if it is due (:data:`STATE_EVERY_S`) or ``force``; a
        failure (a full disk) is logged, never raised."""
        if self.state_mode != "write":
            return
        if runner.identity is None:
            runner.identity = self._identity(runner)
        async with runner.save_lock:
            snap, mono = self._snapshot(runner), self.mono()
            durable = snap.durable()
            if not force and durable == runner.saved_durable and mono - runner.saved_mono < STATE_EVERY_S:
                return
            doc = capture(snap, service=runner.svc.name, window=runner.svc.scale_down_stabilization, wall=self.wall(), mono=mono)
            try:
                await asyncio.to_thread(self.store.save, runner.svc.name, doc)
            except OSError as e:
                text = e.strerror or str(e)
                if runner.save_error is None:
                    log.error("%s: state file %s not writable (%s): a restart now would forget the latest "
                              "cooldowns (the decision log still has them); still deciding", runner.svc.name,
                              self.store.path(runner.svc.name), text)
                runner.save_error = text
                return
            runner.saved_durable, runner.saved_mono = durable, mono
            if runner.save_error is not None:
                log.warning("%s: state file writable again", runner.svc.name)
                runner.save_error = None

    async def restore_state(self, runners: list[ServiceRunner]) -> None:
        """Each runner's saved state, as far as it still means something; then the decision log's
        newer actions (and, in :func:`restore`, its newer recommendations) and the executor's own
        last scale, whichever is latest."""
        wall, mono = self.wall(), self.mono()
        tail = read_log_tail(self.log.path)  # the newest decisions, which the state files may not have yet
        for r in runners:
            r.identity = self._identity(r)
            try:
                doc = self.store.load(r.svc.name)
                restored = restore(doc, r.identity, r.svc, wall=wall, mono=mono, logged=tail.recommendations.get(r.svc.name, ()))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("%s: state file %s unusable (%s): starting without it", r.svc.name, self.store.path(r.svc.name), e)
                restored = restore(None, r.identity, r.svc, wall=wall, mono=mono)
                restored.discarded.append(f"the whole state file: {e}")
            r.restored = restored
            snap = restored.snapshot
            r.state, r.pause = snap.state, snap.pause
            elapsed = 0.0 if restored.saved_at is None else max(0.0, wall - restored.saved_at)
            for spec, source in r.sources:
                data = snap.sources.get(spec.name)
                if data is None:
                    continue
                try:
                    ok = source.restore(data, elapsed)
                except (ValueError, KeyError, TypeError) as e:
                    ok, why = False, one_line(e)
                else:
                    why = "the source refused it"
                if ok:
                    restored.kept.append(f"rate baseline of source {spec.name} ({elapsed:.0f} s old)")
                else:
                    restored.discarded.append(f"rate baseline of source {spec.name}: {why}")
            if snap.breaker is not None and self.advisor is not None:
                self.advisor.restore_breaker(r.svc.name, snap.breaker.failures, snap.breaker.open_until, snap.breaker.last_error)
        # Write-ahead: an action whose intent is in the log but not in the state file (the daemon
        # died before saving it, maybe while the executor acted) counts from its decision's time.
        events = tail.events
        for r in runners:
            assert r.restored is not None
            if r.svc.name not in events or not r.restored.same_executor:
                continue
            since = None if r.restored.saved_at is None else r.restored.saved_at - 2.0
            acts = fold(events[r.svc.name], since)
            if acts.ids:
                self._apply_logged(r, acts, wall, mono)
        await asyncio.gather(*(self._apply_last_scaled(r, wall, mono) for r in runners))
        for r in runners:
            assert r.restored is not None
            if r.restored.kept or r.restored.discarded:
                saved = "" if r.restored.saved_at is None else f" (saved {max(0.0, wall - r.restored.saved_at):.1f} s ago)"
                if r.restored.kept:
                    log.info("%s: state restored%s: %s", r.svc.name, saved, "; ".join(r.restored.kept))
                for d in r.restored.discarded:  # a one-shot dry run only reads: no need to shout
                    log.log(logging.WARNING if self.state_mode == "write" else logging.INFO,
                            "%s: saved state discarded: %s", r.svc.name, d)

    def _apply_logged(self, r: ServiceRunner, acts: Any, wall: float, mono: float) -> None:
        assert r.restored is not None
        s = r.state
        applied = []
        for direction, t in (("up", acts.last_up_at), ("down", acts.last_down_at)):
            if t is None:
                continue
            at = mono - max(0.0, wall - t)
            current = s.last_up_at if direction == "up" else s.last_down_at
            if current is None or at > current + 0.5:
                if direction == "up":
                    s.last_up_at = at
                else:
                    s.last_down_at = at
                applied.append(f"scale-{direction} {wall - t:.0f} s ago")
        if acts.backoff_until is not None and acts.backoff_until > wall:
            until = mono + (acts.backoff_until - wall)
            if s.backoff_until is None or until > s.backoff_until:
                s.backoff_until, s.failures = until, max(s.failures, acts.failures)
                applied.append(f"back-off, {acts.backoff_until - wall:.0f} s left")
        if applied:
            r.restored.kept.append(
                f"from the decision log, not yet in the state file: {', '.join(applied)} (decision {describe_ids(acts.ids)}; "
                "an intent without an outcome counts as done)"
            )

    async def _apply_last_scaled(self, r: ServiceRunner, wall: float, mono: float) -> None:
        assert r.restored is not None
        try:
            last = await asyncio.wait_for(r.executor.last_scaled(), min(LAST_SCALED_TIMEOUT_S, max(1.0, r.svc.check_interval)))
        except Exception as e:
            log.info("%s: the executor could not say when it last scaled (%s)", r.svc.name, one_line(e))
            return
        if last is None:
            return
        at = mono - max(0.0, wall - last.at)
        s = r.state
        moved = []
        if last.direction in ("up", None) and (s.last_up_at is None or at > s.last_up_at + 0.5):
            s.last_up_at = at
            moved.append("up")
        if last.direction in ("down", None) and (s.last_down_at is None or at > s.last_down_at + 0.5):
            s.last_down_at = at
            moved.append("down")
        if moved:
            r.restored.kept.append(
                f"the executor's last scale {max(0.0, wall - last.at):.0f} s ago (cooldown_{'/cooldown_'.join(moved)} count from it)"
            )

    # ------------------------------------------------------------------ one tick

    async def observe(self, runner: ServiceRunner) -> tuple[dict[str, float], ReplicaStatus | None, list[str]]:
        """Every source and the executor concurrently, each bounded by the check interval."""
        bound = max(1.0, runner.svc.check_interval)
        readings = await asyncio.gather(
            asyncio.wait_for(runner.executor.status(), bound),
            *(asyncio.wait_for(source.read(), bound) for _, source in runner.sources),
            return_exceptions=True,
        )
        status, metrics = readings[0], readings[1:]
        errors: list[str] = []
        observations: dict[str, float] = {}
        ok, failed = [], []
        for (spec, _), reading in zip(runner.sources, metrics, strict=True):
            who = "source" if len(runner.sources) == 1 else f"source {spec.name}"
            if isinstance(reading, BaseException):
                errors.append(redact(f"{who}: {one_line(reading)}"))
                failed.append(spec.name)
            elif isinstance(reading, dict):
                observations.update((spec.metric_name(k), v) for k, v in reading.items())
                ok.append(spec.name)
        runner.state.note_reads(ok, failed)  # for on_missing: failed reads in a row, per source
        if isinstance(status, BaseException):
            errors.append(redact(f"executor: {one_line(status)}"))
            return observations, None, errors
        assert isinstance(status, ReplicaStatus)
        observations.update(status.metrics)
        observations["replicas.running"] = float(status.running)
        observations["replicas.desired"] = float(status.desired)
        observations["replicas.failed"] = float(status.failed)
        if not status.healthy or status.failed:
            errors.append(f"executor: {status.detail or 'unhealthy'}")
        return observations, status, errors

    async def tick(self, runner: ServiceRunner, *, dry_run: bool = False) -> DecisionRecord:
        async with runner.lock:
            record = await self._tick(runner, dry_run)
        if not dry_run:
            await self.save_state(runner)
        return record

    def _active_pause(self, runner: ServiceRunner) -> Pause | None:
        pause = runner.pause
        if pause is not None and not pause.active(self.wall()):
            log.info("%s: pause ended (it was %s)", runner.svc.name, pause.text())
            runner.pause = pause = None
        return pause

    async def _tick(self, runner: ServiceRunner, dry_run: bool) -> DecisionRecord:
        svc = runner.svc
        mode = "dry-run" if dry_run else self.mode
        observations, status, errors = await self.observe(runner)
        runner.ticks += 1
        runner.last_observations = observations
        runner.last_status = status
        now = self.mono()
        pause = self._active_pause(runner)
        paused: dict[str, Any] = {"paused": pause.as_dict()} if pause is not None else {}

        if status is None:
            # Without a replica count there is nothing to size from: record and wait.
            record = DecisionRecord(
                ts=rfc3339(self.wall()), service=svc.name, mode=mode, current_replicas=None,  # type: ignore[arg-type]
                decision="hold", target_replicas=None, reason="replica count unavailable: holding",
                policy=svc.policy, source="none", observations=observations, errors=errors, id=_decision_id(),
                paused=paused.get("paused"),
            )
            self.recorder.write(record)
            return self._keep(runner, record)

        current = status.desired
        # The same step the simulator runs; the advisor's callback never waits for the model.
        advise = None if self.beside is None else self.beside.advise_for(svc, runner.state, now)
        decision = step(svc, observations, current, runner.state, now, advise)

        record = DecisionRecord.from_decision(decision, mode=mode, ts=self.wall(), errors=errors, id=_decision_id())
        if pause is not None:
            record = record.model_copy(update=paused)
            if decision.changes and mode == "autonomous":
                record = record.model_copy(update={"reason": f"{record.reason}; paused {pause.text()}: not acting"})
        act = decision.changes and mode == "autonomous" and pause is None
        return await self._conclude(runner, decision, record, now, act)

    async def _conclude(self, runner: ServiceRunner, decision: Decision, record: DecisionRecord, now: float, act: bool) -> DecisionRecord:
        """Record ``decision`` and, when ``act``, have the executor carry it out (write-ahead)."""
        svc = runner.svc
        if act and not self.recorder.write(record.model_copy(update={"phase": "intent"})):
            # Write-ahead: an action the log cannot hold is not taken. The decision is kept in
            # memory (status, the LLM's tools) and the log's first line afterwards names the gap.
            self.recorder.refuse()
            note = f"not acted: the decision log is not writable ({self.recorder.error})"
            record = record.model_copy(update={"reason": f"{record.reason}; {note}", "errors": [*record.errors, f"decision log: {note}"]})
            remember(runner.state, decision, now, acted=False, observations=decision.observations)
            return self._keep(runner, record)
        if not act:
            remember(runner.state, decision, now, acted=False, observations=decision.observations)
            self.recorder.write(record)
            return self._keep(runner, record)

        started = time.monotonic()
        try:
            result = await runner.executor.scale(decision.target)
        except Exception as e:  # executors report failures in their outcome; a raise is a bug, logged as one
            result = ScaleOutcome(False, f"executor raised {one_line(e)}", (time.monotonic() - started) * 1000)
        removed: dict[str, Any] = {"removed": [r.as_dict() for r in result.removed]} if result.removed else {}
        outcome = Outcome(
            status="ok" if result.ok else "error", message=result.message, duration_ms=round(result.duration_ms, 1), **removed
        )
        remember(runner.state, decision, now, acted=True, ok=result.ok, observations=decision.observations)
        if not result.ok and runner.state.backoff_until is not None:
            retry_in = runner.state.backoff_until - now
            outcome.retry_at = rfc3339(self.wall() + retry_in)
            outcome.message += f"; backing off, next scale-up not before {outcome.retry_at} (in {retry_in:.0f} s)"
        assert record.id is not None
        self.recorder.write_outcome(OutcomeRecord(ts=rfc3339(self.wall()), service=svc.name, id=record.id, outcome=outcome))
        return self._keep(runner, record.model_copy(update={"executed": True, "outcome": outcome}))

    def _keep(self, runner: ServiceRunner, record: DecisionRecord) -> DecisionRecord:
        """The decision in memory (whether or not the log took it): status, hooks, the LLM's tools."""
        runner.last_record = record
        runner.recent.append(redact_obj(record.model_dump(mode="json")))  # the LLM's tools may send it anywhere
        del runner.recent[:-50]
        for hook in self.on_record:
            hook(record)
        if self.status_path is not None:
            self._status_soon()
        return record

    # ------------------------------------------------------------------ control

    def runner_for(self, service: Any) -> ServiceRunner:
        if not isinstance(service, str) or service not in self.runners:
            known = ", ".join(sorted(self.runners)) or "none"
            raise ControlRefused("unknown_service", f"no service named {service!r} (services: {known})")
        return self.runners[service]

    async def pause(self, service: str, for_s: float | None = None, reason: str = "") -> dict[str, Any]:
        """Stop acting on ``service`` (for ``for_s`` seconds, or until resumed); decisions go on."""
        runner = self.runner_for(service)
        if for_s is not None and not (isinstance(for_s, int | float) and 0 < for_s < 10 * 365 * 86400):
            raise ControlRefused("bad_request", f"for_s: must be a positive number of seconds, got {for_s!r}")
        now = self.wall()
        runner.pause = Pause(now, None if for_s is None else now + float(for_s), str(reason or "")[:200])
        log.info("%s: paused %s%s", service, runner.pause.text(), f" ({runner.pause.reason})" if runner.pause.reason else "")
        await self.save_state(runner)
        self._refresh_status()
        return {"service": service, "paused": runner.pause.as_dict()}

    async def resume(self, service: str) -> dict[str, Any]:
        runner = self.runner_for(service)
        was = runner.pause
        runner.pause = None
        if was is not None:
            log.info("%s: resumed (was paused %s)", service, was.text())
        await self.save_state(runner)
        self._refresh_status()
        return {"service": service, "was_paused": None if was is None else was.as_dict()}

    async def scale_to(self, service: str, replicas: Any, *, reason: str = "", source: str = "manual",
                       dry_run: bool = False) -> DecisionRecord:
        """A decision asked for from outside (``docktor scale``, later MCP).

        ``manual``: an operator's override, clamped by min/max only (like ``kubectl scale`` on a
        workload an autoscaler also drives: the next automatic decisions may move it again, so
        pause first to keep it). ``mcp``: an assistant's proposal, clamped into the envelope every
        decision is (bounds, step limits, cooldowns, stabilization, back-off, the rules'
        direction), but not into the LLM advisor's narrower one (this tick's direction, the
        ``llm:`` allowance): an assistant speaks for a person (docs/operations.md, "MCP").
        Recorded with that ``source``; with ``dry_run``, only returned.
        """
        runner = self.runner_for(service)
        if source not in ("manual", "mcp"):
            raise ControlRefused("bad_request", f"source: must be manual or mcp, got {source!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ControlRefused("bad_request", f"replicas: must be a whole number >= 0, got {replicas!r}")
        if not dry_run and self.mode != "autonomous":
            raise ControlRefused("not_allowed", f"the daemon runs in {self.mode} mode: it never acts "
                                                "(start it without --advisory, or ask with dry_run)")
        svc = runner.svc
        # One line, bounded: the reason is quoted into the decision log and every reader's table.
        why = " ".join(str(reason or "").split())[:300] or ("docktor scale" if source == "manual" else "no reason given")
        async with runner.lock:
            pause = self._active_pause(runner)
            if pause is not None and source == "mcp" and not dry_run:
                # An assistant never acts on a paused service (an operator's ``docktor scale`` may: it
                # is the override a pause during an incident is for).
                raise ControlRefused("not_allowed", f"{service} is paused {pause.text()}: nothing is executed "
                                                    f"(docktor resume {service})")
            observations, status, errors = await self.observe(runner)
            runner.last_observations, runner.last_status = observations, status
            if status is None:
                raise ControlRefused("not_allowed", f"{service}: replica count unavailable, not scaling: {'; '.join(errors)}")
            now = self.mono()
            p = plan(svc, observations, status.desired, runner.state, now)
            env = p.envelope if source == "mcp" else Envelope(svc.min_replicas, svc.max_replicas, "min_replicas", "max_replicas")
            decision = finish(svc, p, Proposal(replicas, f"{source}: {why}"), source, envelope=env)  # type: ignore[arg-type]
            mode = "dry-run" if dry_run else self.mode
            record = DecisionRecord.from_decision(decision, mode=mode, ts=self.wall(), errors=errors, id=_decision_id())
            if dry_run:
                return record if pause is None else record.model_copy(update={"paused": pause.as_dict()})
            record = await self._conclude(runner, decision, record, now, decision.changes)
        await self.save_state(runner)
        return record

    def _refresh_status(self) -> None:
        if self.status_path is not None:
            self.write_status()

    async def reload(self, config: DocktorConfig) -> dict[str, Any]:
        """Run ``config`` from now on: unchanged services go on untouched, changed ones restart
        (keeping plugins whose settings did not change, and whatever of their state still means
        something), new ones start, removed ones stop. ``config`` is already validated; this
        refuses only what cannot change while running (``state_dir``) and a target another
        process holds."""
        async with self._reloading:
            return await self._reload(config)

    async def _reload(self, config: DocktorConfig) -> dict[str, Any]:
        if config.state_dir != self.config.state_dir:
            raise ControlRefused("invalid_config", f"state_dir: cannot change while the daemon runs (it is "
                                                   f"{self.config.state_dir}); stop and start the daemon to move it")
        old = self.config
        fingerprint = {s.name: _fingerprint(s) for s in old.services}
        llm_changed = any(getattr(old.llm, k) != getattr(config.llm, k) for k in LLM_ENDPOINT_KEYS)
        retuned = [] if llm_changed else [k for k in type(config.llm).model_fields
                                          if getattr(old.llm, k) != getattr(config.llm, k)]
        changed = [s for s in config.services if s.name in fingerprint and _fingerprint(s) != fingerprint[s.name]]
        if llm_changed:  # every service's breaker and advice belong to the old endpoint
            changed += [s for s in config.services if s.name in fingerprint and s not in changed]
        added = [s for s in config.services if s.name not in fingerprint]
        removed = [n for n in fingerprint if n not in {s.name for s in config.services}]
        unchanged = [s.name for s in config.services if s.name in fingerprint and s not in changed]

        # Build first, claim the new targets, and only then stop anything: a refused reload changes nothing.
        fresh = {s.name: self._runner(s, reuse=self.runners.get(s.name), config=config) for s in changed + added}
        for name, r in fresh.items():
            was = self.runners.get(name)
            if was is not None and was.target_lock is not None and was.target() == r.target():
                r.target_lock = was.target_lock  # the same target: this process keeps holding it
        try:
            self._claim([r for r in fresh.values()], "daemon")
        except Exception as e:
            for name, r in fresh.items():
                await asyncio.gather(*self._close_plugins(r, keep=self.runners.get(name)), return_exceptions=True)
                was = self.runners.get(name)
                if r.target_lock is not None and (was is None or r.target_lock is not was.target_lock):
                    r.target_lock.release()
            raise ControlRefused("invalid_config", str(e)) from None

        stopping = [self.runners[n] for n in removed] + [self.runners[s.name] for s in changed]
        await self._halt(stopping)
        for r in stopping:
            await self.save_state(r, force=True)
        self.config = config
        self.mode = self.mode_override or config.mode
        self.log.max_bytes, self.log.backups = config.log.max_bytes, config.log.backups
        if llm_changed:
            await self._close_advisor()
            self._open_advisor()
        elif retuned and self.advisor is not None:
            self.advisor.retune(config.llm)
        closers: list[Awaitable[None]] = []
        for name in removed:
            r = self.runners.pop(name)
            closers.extend(self._close_plugins(r))
            if r.target_lock is not None:
                r.target_lock.release()
        for s in changed:
            r_old, r_new = self.runners[s.name], fresh[s.name]
            closers.extend(self._close_plugins(r_old, keep=r_new))
            if r_old.target_lock is not None and r_new.target_lock is not r_old.target_lock:
                r_old.target_lock.release()
            self.runners[s.name] = r_new
        for s in added:
            self.runners[s.name] = fresh[s.name]
        results = await asyncio.gather(*closers, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                log.warning("error while closing: %s", res)
        restarted = [self.runners[s.name] for s in changed + added]
        if self.state_mode != "off":
            await self.restore_state(restarted)
        if self._running:
            for r in restarted:
                self._launch(r)
        report = {
            "changed": {s.name: _what_changed(old.service(s.name), s) or "llm" for s in changed},
            "added": [s.name for s in added], "removed": removed, "unchanged": unchanged, "mode": self.mode,
            "llm_retuned": retuned,
            "restored": {r.svc.name: r.restored.as_dict() for r in restarted if r.restored is not None},
        }
        log.info("reloaded %s: %s", config.path, _report_line(report))
        self._refresh_status()
        return report

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        services = {}
        for name, r in self.runners.items():
            s = r.last_status
            services[name] = {
                "replicas": None if s is None else {"desired": s.desired, "running": s.running, "failed": s.failed},
                "last_decision": None if r.last_record is None else {
                    k: getattr(r.last_record, k) for k in ("ts", "decision", "current_replicas", "target_replicas", "reason", "executed")
                },
                "paused": None if r.pause is None or not r.pause.active(self.wall()) else r.pause.as_dict(),
                "bounds": {"min": r.svc.min_replicas, "max": r.svc.max_replicas},
                "policy": r.svc.policy,
                "clocks": _clocks(r, self.mono()),
                "restored": None if r.restored is None else r.restored.as_dict(),
                "state_file_error": r.save_error,
            }
        return {
            "pid": os.getpid(), "started_at": rfc3339(self.started_at), "mode": self.mode, "phase": self.phase,
            "config": None if self.config.path is None else str(self.config.path.resolve()), "state_dir": str(self.state_dir),
            "decision_log": self.recorder.health(), "status_file_error": self.status_error, "services": services,
        }

    def _status_soon(self) -> None:
        """Have the status file show the latest decisions within :data:`STATUS_EVERY_S`.

        The first decision after a quiet spell is written at once (on the loop's next turn); the
        ones that follow it within the interval share the next write. One write per decision made
        the status file most of a many-service daemon's CPU: each write serializes every service.
        """
        if self._status_due is not None:
            return
        delay = max(0.0, self._status_written + STATUS_EVERY_S - time.monotonic())
        self._status_due = asyncio.get_running_loop().call_later(delay, self.write_status)

    def write_status(self) -> None:
        """Refresh the status file now; on a full disk in place, and never at the cost of a tick."""
        assert self.status_path is not None
        if self._status_due is not None:  # this write carries what that one would have
            self._status_due.cancel()
            self._status_due = None
        self._status_written = time.monotonic()
        try:
            write_status_file(self.status_path, self.status())
        except OSError as e:
            if self.status_error is None:
                log.error("status file %s not writable: %s", self.status_path, e.strerror or e)
            self.status_error = e.strerror or str(e)
        else:
            self.status_error = None


def _clocks(runner: ServiceRunner, now: float) -> dict[str, float]:
    """The clock guardrails holding a direction now, with the seconds each has left (none: absent)."""
    s, svc = runner.state, runner.svc
    left: dict[str, float] = {}
    if s.last_up_at is not None and now - s.last_up_at < svc.cooldown_up:
        left["cooldown_up_s"] = round(svc.cooldown_up - (now - s.last_up_at), 1)
    last = s.last_action_at()
    if last is not None and now - last < svc.cooldown_down:
        left["cooldown_down_s"] = round(svc.cooldown_down - (now - last), 1)
    if s.backoff_until is not None and now < s.backoff_until:
        left["backoff_s"] = round(s.backoff_until - now, 1)
    return left


def _fingerprint(svc: ServiceConfig) -> tuple[Any, ...]:
    """Everything that defines a service (its position in the file does not)."""
    ex = svc.executor
    return (
        svc.model_dump_json(),
        None if ex is None else (ex.kind, ex.settings.model_dump_json()),
        tuple((s.name, s.kind, s.settings.model_dump_json(), s.primary, s.on_missing) for s in svc.sources),
    )


def _what_changed(old: ServiceConfig, new: ServiceConfig) -> str:
    a, b = old.model_dump(), new.model_dump()
    keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    if (old.executor and old.executor.settings) != (new.executor and new.executor.settings):
        keys.append("executor")
    if _fingerprint(old)[2] != _fingerprint(new)[2]:
        keys.append("sources")
    return ", ".join(keys)


def _report_line(report: dict[str, Any]) -> str:
    parts = []
    if report["changed"]:
        parts.append("restarted " + ", ".join(f"{n} ({why})" for n, why in report["changed"].items()))
    if report["added"]:
        parts.append("started " + ", ".join(report["added"]))
    if report["removed"]:
        parts.append("stopped " + ", ".join(report["removed"]))
    if report["unchanged"]:
        parts.append("unchanged " + ", ".join(report["unchanged"]))
    if report.get("llm_retuned"):
        parts.append("llm " + ", ".join(report["llm_retuned"]) + " changed in place")
    return "; ".join(parts) or "nothing to do"


def _decision_id() -> str:
    """Unique across services and restarts: an intent and its outcome line share it."""
    return uuid.uuid4().hex[:16]


class _Tools:
    """What the LLM advisor's tool calls may see: read-only views of the daemon's state."""

    def __init__(self, daemon: Daemon):
        self._d = daemon

    def _runner(self, service: str) -> ServiceRunner:
        if service not in self._d.runners:
            raise KeyError(f"unknown service {service!r}")
        return self._d.runners[service]

    def queue_metrics(self, service: str) -> dict[str, float]:
        return dict(self._runner(service).last_observations)

    def service_status(self, service: str) -> dict[str, Any]:
        r = self._runner(service)
        s = r.last_status
        if s is None:
            return {"available": False}
        return {"available": True, "desired": s.desired, "running": s.running, "failed": s.failed,
                "healthy": s.healthy, "detail": redact(s.detail or ""), "min_replicas": r.svc.min_replicas, "max_replicas": r.svc.max_replicas}

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        return self._runner(service).recent[-max(0, n):]

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        r = self._runner(service)
        since = self._d.mono() - minutes * 60
        return [(t, obs[metric]) for t, obs in r.state.history if t >= since and metric in obs]
