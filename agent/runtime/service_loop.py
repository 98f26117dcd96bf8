"""One service's loop: every ``check_interval``, observe -> decide -> guard -> act -> record.

A :class:`ServiceLoop` owns what one service needs between ticks (its source and executor
plugins, its decision state, its pause, its state file's bookkeeping) and the asyncio task that
ticks it on its own drift-free schedule (``core/schedule.py``, with the warm-up read when its
sources report rates), like Nomad Autoscaler's ``policy.Handler`` runs one
policy. The :class:`~docktor.agent.runtime.supervisor.Supervisor` starts, stops and reconciles
the loops; a loop never looks at another. A tick gathers the sources and the executor
concurrently, each under its own deadline, so a slow source delays nothing but its own reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from docktor.agent.config.model import ServiceConfig, SourceSpec
from docktor.agent.core.decide import Decision, remember, step
from docktor.agent.core.schedule import next_tick
from docktor.agent.core.state import ServiceState
from docktor.agent.redact import redact, redact_obj
from docktor.agent.runtime.decision_log import DecisionRecord, Outcome, OutcomeRecord
from docktor.agent.runtime.identity import Identity
from docktor.agent.runtime.persist import Breaker, Pause, Restored, SavedState, capture
from docktor.agent.runtime.prose import replicas_unknown
from docktor.agent.runtime.wait_slo import observe as observe_slo
from docktor.agent.runtime.wait_slo import why_none
from docktor.agent.timestamps import rfc3339
from docktor.tools.sdk import Executor, MetricInfo, ReplicaStatus, ScaleOutcome, Source, admit, one_line

if TYPE_CHECKING:
    from docktor.agent.runtime.rundir import TargetLock
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: a service's state file is rewritten at once when a cooldown clock, the back-off, failed reads,
#: the breaker or a pause changed, and otherwise at most this often: what changes every tick
#: (the stabilization window, the rate baselines) a restart rebuilds (persist.py says how)
STATE_EVERY_S = 5.0
#: decisions kept in memory per service, for the LLM's tools
RECENT_DECISIONS = 50


def decision_id() -> str:
    """Unique across services and restarts: an intent and its outcome line share it."""
    return uuid.uuid4().hex[:16]


Observation = tuple[dict[str, float], ReplicaStatus | None, list[str]]


class ServiceLoop:
    """One service: its plugins, what its decisions remember, and the task that ticks it."""

    def __init__(self, svc: ServiceConfig, sources: list[tuple[SourceSpec, Source[Any]]], executor: Executor[Any],
                 daemon: Supervisor) -> None:
        self.svc = svc
        self.sources = sources
        self.executor = executor
        self.daemon = daemon
        #: what each source's metrics, and the executor's, mean (their domain is checked on every reading)
        self.metric_infos: dict[str, Mapping[str, MetricInfo]] = {
            spec.name: _metrics_for(type(source), spec.settings, f"source {spec.name}") for spec, source in sources
        }
        self.executor_infos = _metrics_for(type(executor), executor.settings, "executor")
        #: how long the daemon waits for each reading: the check interval, and never less than the
        #: plugin's own ``timeout`` (plus a second), so a slow server is named by the plugin's own
        #: error ("JetStream API timed out after 2s (nats://...)") rather than cut short unexplained
        self.read_bounds = {spec.name: _read_bound(svc.check_interval, spec.settings) for spec, _ in sources}
        self.status_bound = _read_bound(svc.check_interval, executor.settings)
        #: why this service can never have a live wait-SLO attainment (None: it can)
        self.slo_why = why_none(svc, self.metric_infos)
        self.state = ServiceState()
        self.last_status: ReplicaStatus | None = None
        self.last_observations: dict[str, float] = {}
        self.last_record: DecisionRecord | None = None
        #: when (``daemon.mono``) the last record was made: how old an answer from it would be
        self.last_mono = -math.inf
        self.recent: list[dict[str, Any]] = []  # newest last, for the LLM's tools
        self.ticks = 0
        #: ``docktor pause``: decisions go on and are logged, nothing is executed
        self.pause: Pause | None = None
        #: what the state file's pieces were kept or discarded for (set at start and at a reload)
        self.identity: Identity | None = None
        self.restored: Restored | None = None
        #: one tick (or manual scale) at a time; state-file writes one at a time
        self.lock = asyncio.Lock()
        self._save_lock = asyncio.Lock()
        self.save_error: str | None = None
        #: what the state file last written holds that a restart needs exactly, and when
        self._saved_durable: tuple[Any, ...] | None = None
        self._saved_mono = -math.inf
        self._stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: rundir.TargetLock while this process acts on the executor's target
        self.target_lock: TargetLock | None = None

    @property
    def name(self) -> str:
        return self.svc.name

    def target(self) -> str | None:
        """What the executor scales, named the same from every config, with the executor's kind
        (a Compose project called ``swarm`` is not the Swarm service of that name); None: no check."""
        try:
            target = self.executor.target()
            return None if target is None or self.svc.executor is None else f"{self.svc.executor.kind}:{target}"
        except Exception as e:  # a plugin's bug must not stop the daemon; no target: no check
            log.warning("%s: executor target unknown: %s", self.name, one_line(e))
            return None

    # ------------------------------------------------------------------ the schedule

    def start(self) -> None:
        """Tick from now on, every ``check_interval``, until :meth:`halt`."""
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=self.name)

    async def halt(self) -> None:
        """Stop ticking once the tick in progress is done."""
        self._stop.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        self.task = None

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        interval, mono = self.svc.check_interval, self.daemon.mono
        # a rate needs two reads: the second comes WARM_UP_S after the first (core/schedule.py)
        start, k, warm_up = mono(), 0, self.reads_rates
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self.tick()
            except Exception as e:  # a bug in one tick must not end the service's loop
                log.exception("tick of %s failed: %s", self.name, e)
            for hook in self.daemon.on_tick:
                hook(self.name, time.monotonic() - started)
            k, delay = next_tick(start, interval, k, mono(), warm_up=warm_up)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, delay))
            except TimeoutError:
                pass

    @property
    def reads_rates(self) -> bool:
        """Whether any of the service's sources reports a rate (a ``*_per_second`` figure): only
        then does a one-shot decision need a second reading (a Redis list's never has one)."""
        return any(info.unit.endswith("_per_second") for infos in self.metric_infos.values() for info in infos.values())

    # ------------------------------------------------------------------ observe

    async def observe(self) -> Observation:
        """Every source and the executor concurrently, each bounded (:attr:`read_bounds`).

        A reading's values outside their metric's domain (a negative count, NaN) are missing,
        with the reason among the errors: they never drive a decision (:func:`admit`)."""
        readings = await asyncio.gather(
            asyncio.wait_for(self.executor.status(), self.status_bound),
            *(asyncio.wait_for(source.read(), self.read_bounds[spec.name]) for spec, source in self.sources),
            return_exceptions=True,
        )
        status, metrics = readings[0], readings[1:]
        errors: list[str] = []
        observations: dict[str, float] = {}
        ok, failed = [], []
        for (spec, _), reading in zip(self.sources, metrics, strict=True):
            who = "source" if len(self.sources) == 1 else f"source {spec.name}"
            if isinstance(reading, TimeoutError):  # the plugin ignored its own timeout
                errors.append(redact(f"{who}: no reading within {self.read_bounds[spec.name]:g} s ({_described(spec)})"))
                failed.append(spec.name)
                continue
            if isinstance(reading, BaseException):
                errors.append(redact(f"{who}: {one_line(reading)}"))
                failed.append(spec.name)
                continue
            if not isinstance(reading, Mapping):
                errors.append(f"{who}: read() returned {type(reading).__name__}, not a mapping of metrics")
                failed.append(spec.name)
                continue
            kept, refused = admit(reading, self.metric_infos[spec.name])
            for metric, why in refused.items():
                errors.append(redact(f"{who}: {metric}: {why}: treated as missing"))
            observations.update((spec.metric_name(k), v) for k, v in kept.items())
            ok.append(spec.name)
        self.state.note_reads(ok, failed)  # for on_missing: failed reads in a row, per source
        if isinstance(status, TimeoutError):
            errors.append(f"executor: no status within {self.status_bound:g} s")
            return observations, None, errors
        if isinstance(status, BaseException):
            errors.append(redact(f"executor: {one_line(status)}"))
            return observations, None, errors
        assert isinstance(status, ReplicaStatus)
        executor_metrics, refused = admit(status.metrics, self.executor_infos)
        for metric, why in refused.items():
            errors.append(f"executor: {metric}: {why}: treated as missing")
        observations.update(executor_metrics)
        observations["replicas.running"] = float(status.running)
        observations["replicas.desired"] = float(status.desired)
        observations["replicas.failed"] = float(status.failed)
        if not status.healthy or status.failed:
            errors.append(f"executor: {status.detail or 'unhealthy'}")
        return observations, status, errors

    # ------------------------------------------------------------------ one tick

    async def tick(self, *, dry_run: bool = False) -> DecisionRecord:
        async with self.lock:
            record = await self._tick(dry_run)
        if not dry_run:
            await self.save_state()
        return record

    async def decision_since(self, since: float) -> DecisionRecord:
        """A decision made at ``since`` (``daemon.mono``) or later: the one a tick in progress
        makes once it ends, else one tick now. For what asks between ticks (``docktor keda``'s
        GetMetrics): the loop stays the one place a tick runs, one at a time, so a question never
        runs a second copy of it nor a tick right after another."""
        async with self.lock:
            if self.last_record is not None and self.last_mono >= since:
                return self.last_record
            record = await self._tick(False)
        await self.save_state()
        return record

    def active_pause(self) -> Pause | None:
        """The pause in force now (an ended one is dropped, with a line in the log)."""
        pause = self.pause
        if pause is not None and not pause.active(self.daemon.wall()):
            log.info("%s: pause ended (it was %s)", self.name, pause.text())
            self.pause = pause = None
        return pause

    async def _tick(self, dry_run: bool) -> DecisionRecord:
        svc, daemon = self.svc, self.daemon
        mode = "dry-run" if dry_run else daemon.mode
        observations, status, errors = await self.observe()
        self.ticks += 1
        self.last_observations, self.last_status = observations, status
        now = daemon.mono()
        slo = observe_slo(self.state, svc, self.slo_why, now, observations)
        pause = self.active_pause()
        paused = None if pause is None else pause.as_dict()

        if status is None:
            # Without a replica count there is nothing to size from: record and wait.
            record = DecisionRecord(
                ts=rfc3339(daemon.wall()), service=svc.name, mode=mode, current_replicas=None,  # type: ignore[arg-type]
                decision="hold", target_replicas=None, reason=f"{replicas_unknown(errors)[0]}: holding",
                policy=svc.policy, source="none", observations=observations, errors=errors, id=decision_id(),
                paused=paused, slo=slo,
            )
            daemon.recorder.write(record)
            return self.keep(record)

        # The same step the simulator runs; the advisor's callback never waits for the model.
        advise = None if daemon.beside is None else daemon.beside.advise_for(svc, self.state, now)
        decision = step(svc, observations, status.desired, self.state, now, advise)
        record = DecisionRecord.from_decision(decision, mode=mode, ts=daemon.wall(), errors=errors, id=decision_id())
        if slo is not None:
            record = record.model_copy(update={"slo": slo})
        if pause is not None:
            record = record.model_copy(update={"paused": paused})
            if decision.changes and mode == "autonomous":
                record = record.model_copy(update={"reason": f"{record.reason}; paused {pause.text()}: not acting"})
        act = decision.changes and mode == "autonomous" and pause is None
        return await self.conclude(decision, record, now, act)

    # ------------------------------------------------------------------ act and record

    async def conclude(self, decision: Decision, record: DecisionRecord, now: float, act: bool) -> DecisionRecord:
        """Record ``decision`` and, when ``act``, have the executor carry it out (write-ahead)."""
        recorder = self.daemon.recorder
        if act and not recorder.write(record.model_copy(update={"phase": "intent"})):
            # Write-ahead: an action the log cannot hold is not taken. The decision is kept in
            # memory (status, the LLM's tools) and the log's first line afterwards names the gap.
            recorder.refuse()
            note = f"not acted: the decision log is not writable ({recorder.error})"
            record = record.model_copy(update={"reason": f"{record.reason}; {note}", "errors": [*record.errors, f"decision log: {note}"]})
            remember(self.state, decision, now, acted=False, observations=decision.observations)
            return self.keep(record)
        if not act:
            remember(self.state, decision, now, acted=False, observations=decision.observations)
            recorder.write(record)
            return self.keep(record)

        started = time.monotonic()
        try:
            result = await self.executor.scale(decision.target)
        except Exception as e:  # executors report failures in their outcome; a raise is a bug, logged as one
            result = ScaleOutcome(False, f"executor raised {one_line(e)}", (time.monotonic() - started) * 1000)
        removed: dict[str, Any] = {"removed": [r.as_dict() for r in result.removed]} if result.removed else {}
        outcome = Outcome(
            status="ok" if result.ok else "error", message=result.message, duration_ms=round(result.duration_ms, 1), **removed
        )
        remember(self.state, decision, now, acted=True, ok=result.ok, observations=decision.observations)
        if not result.ok and self.state.backoff_until is not None:
            retry_in = self.state.backoff_until - now
            outcome.retry_at = rfc3339(self.daemon.wall() + retry_in)
            outcome.message += f"; backing off, next scale-up not before {outcome.retry_at} (in {retry_in:.0f} s)"
        assert record.id is not None
        recorder.write_outcome(OutcomeRecord(ts=rfc3339(self.daemon.wall()), service=self.name, id=record.id, outcome=outcome))
        return self.keep(record.model_copy(update={"executed": True, "outcome": outcome}))

    def keep(self, record: DecisionRecord) -> DecisionRecord:
        """The decision in memory (whether or not the log took it): status, hooks, the LLM's tools."""
        self.last_record, self.last_mono = record, self.daemon.mono()
        self.recent.append(redact_obj(record.model_dump(mode="json")))  # the LLM's tools may send it anywhere
        del self.recent[:-RECENT_DECISIONS]
        for hook in self.daemon.on_record:
            hook(record)
        self.daemon.status_file.soon()
        return record

    # ------------------------------------------------------------------ the state file

    def saved_state(self) -> SavedState:
        """What the state file keeps of this service now."""
        sources: dict[str, dict[str, Any]] = {}
        for spec, source in self.sources:
            try:
                data = source.snapshot()
            except Exception as e:  # a plugin's bug costs its baseline, never the tick
                log.warning("%s: source %s: snapshot failed: %s", self.name, spec.name, one_line(e))
                continue
            if data is not None:
                sources[spec.name] = data
        breaker = None
        advisor = self.daemon.advisor
        if advisor is not None:
            failures, open_until, last_error = advisor.breaker_state(self.name)
            breaker = Breaker(failures, open_until, last_error) if failures else None
        if self.identity is None:
            self.identity = self.daemon.identity_of(self)
        return SavedState(self.identity, self.state, sources, breaker, self.pause)

    async def save_state(self, *, force: bool = False) -> None:
        """Write the service's state file if it is due (:data:`STATE_EVERY_S`) or ``force``; a
        failure (a full disk) is logged, never raised."""
        daemon = self.daemon
        if daemon.state_mode != "write":
            return
        async with self._save_lock:
            saved, mono = self.saved_state(), daemon.mono()
            durable = saved.durable()
            if not force and durable == self._saved_durable and mono - self._saved_mono < STATE_EVERY_S:
                return
            doc = capture(saved, service=self.name, window=self.svc.scale_down_stabilization, wall=daemon.wall(), mono=mono,
                          svc=self.svc)
            try:
                await asyncio.to_thread(daemon.store.save, self.name, doc)
            except OSError as e:
                text = e.strerror or str(e)
                if self.save_error is None:
                    log.error("%s: state file %s not writable (%s): a restart now would forget the latest "
                              "cooldowns (the decision log still has them); still deciding", self.name,
                              daemon.store.path(self.name), text)
                self.save_error = text
                return
            self._saved_durable, self._saved_mono = durable, mono
            if self.save_error is not None:
                log.warning("%s: state file writable again", self.name)
                self.save_error = None

    # ------------------------------------------------------------------ closing

    def close_plugins(self, keep: ServiceLoop | None = None) -> list[Any]:
        """Coroutines closing this loop's plugins, except those ``keep`` took over."""
        kept = set() if keep is None else {id(src) for _, src in keep.sources} | {id(keep.executor)}
        closers = [source.close() for _, source in self.sources if id(source) not in kept]
        if id(self.executor) not in kept:
            closers.append(self.executor.close())
        return closers

    def release_target(self, unless: TargetLock | None = None) -> None:
        """Let go of the executor's target (unless it is ``unless``, taken over by a new loop)."""
        if self.target_lock is not None and self.target_lock is not unless:
            self.target_lock.release()
        self.target_lock = None


def _read_bound(check_interval: float, settings: Any) -> float:
    own = getattr(settings, "timeout", None)  # every built-in plugin has one; the contract suite reads it too
    if own is None:  # the Kubernetes-reading executors' bound is per API request (keda's fallback fits within it)
        own = getattr(settings, "request_timeout", None)
    floor = own + 1.0 if isinstance(own, int | float) and not isinstance(own, bool) else 0.0
    return max(1.0, check_interval, floor)


def _described(spec: SourceSpec) -> str:
    from docktor.tools.registry import source_plugin

    try:
        return str(source_plugin(spec.kind).describe(spec.settings))
    except Exception:  # a plugin's bug: its kind says enough
        return spec.kind


def _metrics_for(plugin: type[Source[Any]] | type[Executor[Any]], settings: Any, who: str) -> Mapping[str, MetricInfo]:
    try:
        return plugin.metrics_for(settings)
    except Exception as e:  # a plugin's bug: its metrics are held to the default domain
        log.warning("%s: metrics_for failed: %s", who, one_line(e))
        return {}
