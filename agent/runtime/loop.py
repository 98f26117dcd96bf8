"""The decision loop: per service, every ``check_interval``, observe -> decide -> guard -> act -> record.

One asyncio task per service, each on its own drift-free schedule. A tick gathers the source and
the executor concurrently, each under its own deadline, so one slow or failing service (or one
slow source) never delays another service's ticks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig, ServiceConfig, SourceSpec
from docktor.agent.config.secrets import secret_env_names
from docktor.agent.core.decide import Advice, Plan, conclude, plan, remember
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, Outcome
from docktor.agent.timestamps import rfc3339
from docktor.tools.registry import executor_plugin, source_plugin
from docktor.tools.sdk import Context, Executor, ReplicaStatus, Source, one_line

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
        self.status_path = status_path
        self.wall, self.mono = wall, mono
        self.started_at = wall()
        self.runners: dict[str, ServiceRunner] = {}
        self.advisor: Any = None
        self.on_record: list[Callable[[DecisionRecord], None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        base = self.config.base_dir
        state_dir = self.config.state_dir or base / ".docktor"
        secrets = secret_env_names(self.config)
        for svc in self.config.services:
            context = Context(service=svc.name, base_dir=base, state_dir=state_dir, secret_env=secrets)
            sources = [(spec, source_plugin(spec.kind)(spec.settings, context)) for spec in svc.sources]
            if svc.executor is None:
                raise ValueError(f"service {svc.name!r} has no executor")  # the loader always sets one
            executor = executor_plugin(svc.executor.kind)(svc.executor.settings, context)
            self.runners[svc.name] = ServiceRunner(svc, sources, executor)
        if self.config.llm.provider != "none":
            from docktor.agent.advisor.advisor import make_advisor

            self.advisor = make_advisor(self.config.llm)

    async def close(self) -> None:
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

    async def run_once(self, *, dry_run: bool = False) -> list[DecisionRecord]:
        """One tick of every service, concurrently."""
        return list(await asyncio.gather(*(self.tick(r, dry_run=dry_run) for r in self.runners.values())))

    async def _service_loop(self, runner: ServiceRunner, stop: asyncio.Event) -> None:
        interval = runner.svc.check_interval
        start = self.mono()
        k = 0
        while not stop.is_set():
            try:
                await self.tick(runner)
            except Exception as e:  # a bug in one tick must not end the service's loop
                log.exception("tick of %s failed: %s", runner.svc.name, e)
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
        for (spec, _), reading in zip(runner.sources, metrics, strict=True):
            who = "source" if len(runner.sources) == 1 else f"source {spec.name}"
            if isinstance(reading, BaseException):
                errors.append(f"{who}: {one_line(reading)}")
            elif isinstance(reading, dict):
                observations.update((spec.metric_name(k), v) for k, v in reading.items())
        if isinstance(status, BaseException):
            errors.append(f"executor: {one_line(status)}")
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
                policy=svc.policy, source="none", observations=observations, errors=errors,
            )
            return self._record(runner, record)

        current = status.desired
        p = plan(svc, observations, current, runner.state, now)
        advice = await self._advise(runner, p, now) if self.advisor is not None else None
        decision = conclude(svc, p, advice)

        executed = False
        outcome: Outcome | None = None
        act = decision.changes and mode == "autonomous"
        if act:
            result = await runner.executor.scale(decision.target)
            executed = True
            removed: dict[str, Any] = {"removed": [r.as_dict() for r in result.removed]} if result.removed else {}
            outcome = Outcome(
                status="ok" if result.ok else "error", message=result.message, duration_ms=round(result.duration_ms, 1), **removed
            )
        remember(runner.state, decision, now, acted=act, ok=outcome is None or outcome.status == "ok", observations=decision.observations)
        if outcome is not None and outcome.status == "error" and runner.state.backoff_until is not None:
            retry_in = runner.state.backoff_until - now
            outcome.retry_at = rfc3339(self.wall() + retry_in)
            outcome.message += f"; backing off, next scale-up not before {outcome.retry_at} (in {retry_in:.0f} s)"
        record = DecisionRecord.from_decision(decision, mode=mode, ts=self.wall(), executed=executed, outcome=outcome, errors=errors)
        return self._record(runner, record)

    async def _advise(self, runner: ServiceRunner, p: Plan, now: float) -> Advice:
        budget = self.config.llm.timeout + 0.5
        try:
            advice: Advice = await asyncio.wait_for(self.advisor.advise(runner.svc, p, runner.state, _Tools(self), now), budget)
        except Exception as e:  # the advisor promises not to raise; this is the belt to its braces
            return Advice(None, "fallback", {"error": one_line(e), "asked": True})
        return advice

    def _record(self, runner: ServiceRunner, record: DecisionRecord) -> DecisionRecord:
        self.log.write(record)
        runner.last_record = record
        runner.recent.append(record.model_dump(mode="json"))
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
        return {"pid": os.getpid(), "started_at": rfc3339(self.started_at), "mode": self.mode, "services": services}

    def write_status(self) -> None:
        assert self.status_path is not None
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status()))
        tmp.replace(self.status_path)


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
                "healthy": s.healthy, "detail": s.detail, "min_replicas": r.svc.min_replicas, "max_replicas": r.svc.max_replicas}

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        return self._runner(service).recent[-max(0, n):]

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        r = self._runner(service)
        since = self._d.mono() - minutes * 60
        return [(t, obs[metric]) for t, obs in r.state.history if t >= since and metric in obs]
