"""``discover: {swarm_labels: true}``: the daemon scales the Swarm services whose labels opt in.

Every ``interval`` the engine (a manager, through ``DOCKER_HOST``) is asked for the services
labelled ``docktor.enable``, through the executors' :class:`~docktor.tools.executors.docker_engine.Engine`
(each call bounded and retried). Their labels become services (:mod:`docktor.agent.config.swarm_labels`),
added to the ones the file lists, and the daemon is reconciled with that config by the same
reconcile a reload runs: a service created starts, one whose labels changed restarts, one removed
(or no longer opted in) stops, the others go on untouched.

A label set that does not validate is one error line in the daemon's log, naming the service and
the label, written when it first appears (or changes), and that service is left out; the others
keep scaling. When the engine does not answer, the services found before keep running as they
are (a blip must not stop them all) and the next look tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from docktor.agent.config.model import DocktorConfig, ServiceConfig
from docktor.agent.config.swarm_labels import ENABLE, discovered
from docktor.agent.runtime.commands import ControlRefused
from docktor.agent.runtime.reconcile import fingerprint, report_line
from docktor.tools.executors.docker_engine import Engine
from docktor.tools.sdk import ExecutorError

if TYPE_CHECKING:
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: the label ``docker stack deploy`` puts on every service of a stack: the stack's name
STACK_LABEL = "com.docker.stack.namespace"


class SwarmDiscovery:
    """Keeps the daemon's services in step with the labelled Swarm services."""

    def __init__(self, daemon: Supervisor, base: DocktorConfig) -> None:
        self.daemon = daemon
        #: the config as the file says it; the labelled services are added to it
        self.base = base
        self.found: list[ServiceConfig] = []
        self.engine = Engine()
        self._refused: dict[str, str] = {}
        self._engine_problem: str | None = None

    def complete(self, config: DocktorConfig) -> DocktorConfig:
        """``config`` (a reloaded file) with the labelled services found last, from now on the base."""
        self.base = config
        return self.config()

    def config(self) -> DocktorConfig:
        if not self.base.discover.swarm_labels:
            return self.base
        listed = {s.name for s in self.base.services}
        return self.base.model_copy(update={"services": [*self.base.services, *(s for s in self.found if s.name not in listed)]})

    async def labelled(self) -> dict[str, dict[str, str]]:
        """Swarm service name -> its labels, for every service that has ``docktor.enable`` (in
        ``discover.swarm_stack`` when set: the label ``docker stack deploy`` puts on its services)."""
        api = self.engine.api
        stack = self.base.discover.swarm_stack
        wanted = [ENABLE, *([f"{STACK_LABEL}={stack}"] if stack else [])]
        rows: list[dict[str, Any]] = await self.engine.call(lambda: api.services(filters={"label": wanted}))
        return {str(r["Spec"]["Name"]): dict(r["Spec"].get("Labels") or {}) for r in rows}

    async def look(self) -> None:
        """One look at the engine, and a reconcile when what it found changed the services."""
        if not self.base.discover.swarm_labels:
            return
        try:
            labelled = await self.labelled()
        except ExecutorError as e:
            if str(e) != self._engine_problem:
                log.warning("swarm labels: cannot list the labelled services (%s); the services found before "
                            "keep running, trying again in %gs", e, self.base.discover.interval)
            self._engine_problem = str(e)
            return
        if self._engine_problem is not None:
            log.info("swarm labels: the engine answers again")
            self._engine_problem = None
        found = discovered(labelled, self.base)
        for name, line in found.refused.items():
            if self._refused.get(name) != line:
                log.error("%s; skipped, the other services keep scaling", line)
        self._refused = found.refused
        self.found = found.services
        await self.apply()

    async def apply(self) -> None:
        config = self.config()
        running = {s.name: fingerprint(s) for s in self.daemon.config.services}
        if running == {s.name: fingerprint(s) for s in config.services}:
            return
        try:
            report = await self.daemon.reload(config)
        except ControlRefused as e:
            log.error("swarm labels: %s", "; ".join(e.problems))
            return
        log.info("swarm labels: %s", report_line(report))

    async def run(self, stop: asyncio.Event) -> None:
        """Look now, then every ``interval`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.look()
            except Exception as e:  # a bug here must not end the daemon: its services go on
                log.exception("swarm labels: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.base.discover.interval)

    async def close(self) -> None:
        await self.engine.close()
