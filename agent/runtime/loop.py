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
from typing import Any

from docktor.agent.config.model import DocktorConfig, ServiceConfig, SourceSpec
from docktor.agent.core.decide import remember, step
from docktor.agent.core.state import ServiceState
from docktor.agent.redact import redact, redact_obj
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, Outcome, OutcomeRecord
from docktor.agent.runtime.recorder import Recorder, write_status_file
from docktor.agent.timestamps import rfc3339
from docktor.tools.registry import executor_plugin, source_plugin
from docktor.tools.sdk import Context, Executor, ReplicaStatus, ScaleOutcome, Source, one_line

log = logging.getLogger("docktor")


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
    ):
        self.config = config
        self.mode = mode or config.mode
        state_dir = config.state_dir or Path(".docktor")
        self.log = DecisionLog(
            log_path or state_dir / "decisions.jsonl", config.log.max_bytes, config.log.backups
        )
        self.recorder = Recorder(self.log, wall=wall, mono=mono)
        self.status_path = status_path
        self.status_error: str | None = None  # the last failed status-file write, for the log
        self.wall, self.mono = wall, mono
        self.started_at = wall()
        self.runners: dict[str, ServiceRunner] = {}
        self.advisor: Any = None
        self.beside: Any = None  # AdvisorBeside: the LLM's calls, beside the loop
        self.on_record: list[Callable[[DecisionRecord], None]] = []
        self.on_tick: list[Callable[[str, float], None]] = []  # (service, seconds): the metrics' tick timer

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        base = self.config.base_dir
        state_dir = self.config.state_dir or base / ".docktor"
        for svc in self.config.services:
            context = Context(service=svc.name, base_dir=base, state_dir=state_dir)
            sources = [(spec, source_plugin(spec.kind)(spec.settings, context)) for spec in svc.sources]
            if svc.executor is None:
                raise ValueError(f"service {svc.name!r} has no executor")  # the loader always sets one
            executor = executor_plugin(svc.executor.kind)(svc.executor.settings, context)
            self.runners[svc.name] = ServiceRunner(svc, sources, executor)
        if self.config.llm.provider != "none":
            from docktor.agent.advisor.advisor import make_advisor
            from docktor.agent.runtime.beside import AdvisorBeside

            self.advisor = make_advisor(self.config.llm)
            self.beside = AdvisorBeside(self.advisor, _Tools(self), wall=self.wall, mono=self.mono)

    async def close(self) -> None:
        if self.beside is not None:
            await self.beside.close()  # calls still in flight are cancelled: nobody waits for them
        closers: list[Awaitable[None]] = []
        for r in self.runners.values():
            closers.extend(source.close() for _, source in r.sources)
            closers.append(r.executor.close())
        if self.advisor is not None:
            closers.append(self.advisor.close())
        results = await asyncio.gather(*closers, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                log.warning("error while closing: %s", res)
        self.log.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every service until ``stop`` is set; the tick in progress finishes first."""
        tasks = [asyncio.create_task(self._service_loop(r, stop), name=r.svc.name) for r in self.runners.values()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

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
            # Drift-free: the k-th tick is due at start + k*interval; overrun ticks are skipped.
            k = max(k + 1, math.floor((self.mono() - start) / interval) + 1)
            delay = start + k * interval - self.mono()
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
            except TimeoutError:
                pass

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
        svc = runner.svc
        mode = "dry-run" if dry_run else self.mode
        observations, status, errors = await self.observe(runner)
        runner.ticks += 1
        runner.last_observations = observations
        runner.last_status = status
        now = self.mono()

        if status is None:
            # Without a replica count there is nothing to size from: record and wait.
            record = DecisionRecord(
                ts=rfc3339(self.wall()), service=svc.name, mode=mode, current_replicas=None,  # type: ignore[arg-type]
                decision="hold", target_replicas=None, reason="replica count unavailable: holding",
                policy=svc.policy, source="none", observations=observations, errors=errors, id=_decision_id(),
            )
            self.recorder.write(record)
            return self._keep(runner, record)

        current = status.desired
        # The same step the simulator runs; the advisor's callback never waits for the model.
        advise = None if self.beside is None else self.beside.advise_for(svc, runner.state, now)
        decision = step(svc, observations, current, runner.state, now, advise)

        record = DecisionRecord.from_decision(decision, mode=mode, ts=self.wall(), errors=errors, id=_decision_id())
        act = decision.changes and mode == "autonomous"
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
        outcome = Outcome(
            status="ok" if result.ok else "error", message=result.message, duration_ms=round(result.duration_ms, 1)
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
            self.write_status()
        return record

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
            }
        return {
            "pid": os.getpid(), "started_at": rfc3339(self.started_at), "mode": self.mode,
            "decision_log": self.recorder.health(), "status_file_error": self.status_error, "services": services,
        }

    def write_status(self) -> None:
        """Refresh the status file; on a full disk in place, and never at the cost of a tick."""
        assert self.status_path is not None
        try:
            write_status_file(self.status_path, self.status())
        except OSError as e:
            if self.status_error is None:
                log.error("status file %s not writable: %s", self.status_path, e.strerror or e)
            self.status_error = e.strerror or str(e)
        else:
            self.status_error = None


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
