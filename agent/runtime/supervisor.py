"""The supervisor: builds one :class:`~docktor.agent.runtime.service_loop.ServiceLoop` per
configured service, starts and stops them, and reconciles them with a new config at a reload.

What the loops share lives here: the decision log and its :class:`Recorder`, the LLM advisor
beside the loop, the state files' store, the status file, the clocks, and the hooks the metrics
exporter listens on (a record, a tick, a reload). Used by ``daemon start`` (through
:mod:`.foreground`), ``decide --once`` and ``demo``.

Where each job is: a tick in :mod:`.service_loop`, a reload in :mod:`.reconcile`, a restored
state in :mod:`.restore` (what is saved: :mod:`.persist`), the status in :mod:`.status`, the
control commands in :mod:`.commands`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from docktor.agent.config.model import DocktorConfig, ServiceConfig, SourceSpec
from docktor.agent.config.secrets import secret_env_names
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord
from docktor.agent.runtime.identity import Identity
from docktor.agent.runtime.persist import StateStore
from docktor.agent.runtime.recorder import Recorder
from docktor.agent.runtime.service_loop import ServiceLoop
from docktor.agent.runtime.status import StatusFile, status_document
from docktor.tools.registry import executor_plugin, source_plugin
from docktor.tools.sdk import Context, Source

log = logging.getLogger("docktor")

#: ``state``: whether the daemon restores and saves each service's state (docs/operations.md)
StateMode = Literal["off", "read", "write"]


class Supervisor:
    """Runs every configured service, each in its own :class:`ServiceLoop`."""

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
        self.log = DecisionLog(log_path or self.state_dir / "decisions.jsonl", config.log.max_bytes, config.log.backups)
        self.recorder = Recorder(self.log, wall=wall, mono=mono)
        self.status_file = StatusFile(status_path, lambda: status_document(self))
        self.wall, self.mono = wall, mono
        self.started_at = wall()
        self.loops: dict[str, ServiceLoop] = {}
        self.advisor: Any = None
        self.beside: Any = None  # AdvisorBeside: the LLM's calls, beside the loop
        #: hooks (the metrics exporter): every decision; every tick's duration; every reload
        self.on_record: list[Callable[[DecisionRecord], None]] = []
        self.on_tick: list[Callable[[str, float], None]] = []
        self.on_reload: list[Callable[[DocktorConfig, set[str]], None]] = []
        self.state_mode: StateMode = state
        self.store = StateStore(self.state_dir)
        self.phase = "starting"  # running, stopping: for ``daemon status`` while it stops
        self.running = False
        self.reloading = asyncio.Lock()

    # ------------------------------------------------------------------ building loops

    def context(self, svc: ServiceConfig, config: DocktorConfig) -> Context:
        # secret_env: Docktor's own credentials, which the local executor keeps from its replicas
        return Context(service=svc.name, base_dir=config.base_dir, state_dir=self.state_dir, secret_env=secret_env_names(config))

    def build_loop(self, svc: ServiceConfig, reuse: ServiceLoop | None = None, config: DocktorConfig | None = None) -> ServiceLoop:
        """A loop for ``svc`` of ``config`` (the running one by default); plugins whose kind and
        settings did not change are taken over from ``reuse``."""
        context = self.context(svc, config or self.config)
        kept: dict[tuple[Any, ...], Source[Any]] = {} if reuse is None else {
            (s.name, s.kind, s.settings, s.primary): src for s, src in reuse.sources
        }
        sources: list[tuple[SourceSpec, Source[Any]]] = []
        for spec in svc.sources:
            same = kept.pop((spec.name, spec.kind, spec.settings, spec.primary), None)
            sources.append((spec, same if same is not None else source_plugin(spec.kind)(spec.settings, context)))
        if svc.executor is None:
            raise ValueError(f"service {svc.name!r} has no executor")  # the loader always sets one
        old = None if reuse is None else reuse.svc.executor
        if reuse is not None and old is not None and (old.kind, old.settings) == (svc.executor.kind, svc.executor.settings):
            executor = reuse.executor
        else:
            executor = executor_plugin(svc.executor.kind)(svc.executor.settings, context)
        return ServiceLoop(svc, sources, executor, self)

    def identity_of(self, loop: ServiceLoop) -> Identity:
        """What gives a service's saved state its meaning (persist.py)."""
        return Identity.of(loop.svc, loop.target(), self.config.llm)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        from docktor.agent.runtime.restore import restore_loops

        for svc in self.config.services:
            self.loops[svc.name] = self.build_loop(svc)
        self.open_advisor()
        if self.state_mode != "off":
            await restore_loops(self, list(self.loops.values()))

    def open_advisor(self) -> None:
        if self.config.llm.provider != "none":
            from docktor.agent.advisor.advisor import make_advisor
            from docktor.agent.runtime.beside import AdvisorBeside, AdvisorTools

            self.advisor = make_advisor(self.config.llm)
            self.beside = AdvisorBeside(self.advisor, AdvisorTools(self), wall=self.wall, mono=self.mono)

    async def close_advisor(self) -> None:
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
        self.claim(list(self.loops.values()), what)

    def claim(self, loops: list[ServiceLoop], what: str) -> None:
        from docktor.agent.runtime.rundir import TargetBusy, lock_target

        taken: list[ServiceLoop] = []
        holder = {"what": what, "config": str(self.config.path.resolve()) if self.config.path else None}
        try:
            for loop in loops:
                target = loop.target()
                if target is None or (loop.target_lock is not None and loop.target_lock.target == target):
                    continue
                try:
                    loop.target_lock = lock_target(target, holder)
                except TargetBusy as e:
                    raise TargetBusy(e.target, {**e.holder, "service": loop.name}) from None
                taken.append(loop)
        except BaseException:
            for loop in taken:
                loop.release_target()
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every service until ``stop`` is set; the ticks in progress finish first."""
        self.running = True
        self.phase = "running"
        for loop in self.loops.values():
            loop.start()
        try:
            await stop.wait()
        except asyncio.CancelledError:
            for loop in self.loops.values():
                loop.cancel()
            raise
        finally:
            self.running = False
        self.phase = "stopping"
        await asyncio.gather(*(loop.halt() for loop in self.loops.values()))

    async def close(self) -> None:
        self.phase = "stopping"
        # what the last ticks learnt, for the next start (they wrote it every few seconds only);
        # a daemon that never ticked (refused to start) leaves the file as the last one wrote it
        await asyncio.gather(*(loop.save_state(force=True) for loop in self.loops.values() if loop.ticks and loop.task is None))
        self.status_file.flush()  # the last decisions, before the loop that would write them ends
        await self.close_advisor()
        results = await asyncio.gather(*(c for loop in self.loops.values() for c in loop.close_plugins()), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                log.warning("error while closing: %s", res)
        for loop in self.loops.values():
            loop.release_target()
        self.log.close()

    async def run_once(self, *, dry_run: bool = False, window: float = 0.0) -> list[DecisionRecord]:
        """One decision for every service, concurrently.

        Rates need two readings: with ``window`` > 0 each service is read once, then decided on a
        second reading ``window`` seconds later (at most its check interval), so a one-shot
        decision sees ``queue.rate_in``/``rate_out`` like the daemon's ticks do. A service whose
        sources report no rates (a Redis list) is read once: waiting would learn nothing.
        """
        records = list(await asyncio.gather(*(self._once(loop, dry_run, window) for loop in self.loops.values())))
        if self.beside is not None:
            # What the daemon would do next: the LLM's answer, applied at the tick it lands in.
            landed = await self.beside.settle(self.config.llm.timeout + 1.0)
            records += await asyncio.gather(*(self.loops[name].tick(dry_run=dry_run) for name in landed))
        return records

    async def _once(self, loop: ServiceLoop, dry_run: bool, window: float) -> DecisionRecord:
        wait = min(window, loop.svc.check_interval) if loop.reads_rates else 0.0
        if wait > 0:
            started = self.mono()
            observations, status, _ = await loop.observe()
            if status is not None:  # the first reading is history, as the previous tick's would be
                loop.state.history.append((started, observations))
            await asyncio.sleep(max(0.0, started + wait - self.mono()))
        return await loop.tick(dry_run=dry_run)

    # ------------------------------------------------------------------ reload and status

    async def reload(self, config: DocktorConfig) -> dict[str, Any]:
        """Run ``config`` from now on (:func:`docktor.agent.runtime.reconcile.reconcile`)."""
        from docktor.agent.runtime.reconcile import reconcile

        async with self.reloading:
            return await reconcile(self, config)

    def status(self) -> dict[str, Any]:
        return status_document(self)

    def write_status(self) -> None:
        """Refresh the status file now (``daemon start`` does once it is ready)."""
        self.status_file.write()
