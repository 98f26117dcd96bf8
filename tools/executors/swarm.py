"""Scale one Docker Swarm service through the Engine API, and verify from its tasks that it worked.

Docktor talks to a manager node (``DOCKER_HOST``: ``unix://``, ``tcp://`` with TLS, ``ssh://``).
A scale is what ``docker service scale`` does, through the docker SDK: read the service, change
its replica count in the spec it read, and update it with the version it read (the engine refuses
an update based on a stale version; the executor reads again and retries). Nothing else in the
spec changes, so no task is restarted by a scale.

Everything reported comes from the service's tasks (:mod:`.swarm_tasks`): per slot, its newest
task that is meant to run; a task that is rejected or failed (image missing, no node satisfies the constraints, a
host-mode port taken, exit at start) makes the scale an error carrying the task's own error text,
and the daemon then backs off as for Compose.

Scale-in: Swarm chooses the tasks to remove (tasks not running first, then from the nodes with
the most tasks of the service; among equals on a node, any); the Engine API cannot name one. Each
removed task's container gets the service's stop signal and ``stop_grace_period`` and is killed
after it; the executor waits for every removed task to end and records which ended how.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from docker.errors import APIError, DockerException, NotFound

from docktor.tools.executors.docker_engine import DockerExecutor, client_from_env, engine_address, engine_label, short
from docktor.tools.executors.swarm_tasks import Task, View, engine_time, note_removed
from docktor.tools.sdk import Context, ExecutorError, LastScale, PluginSettings, PositiveSeconds, RemovedReplica, ReplicaStatus

POLL_S = 0.5
#: how long every task must stay running before a scale counts as done (a crash at start is
#: "running" for a moment)
STABLE_S = 2.0
#: bound on validate's look at the engine
CHECK_TIMEOUT_S = 5.0
#: attempts at an update that the engine refuses because the service changed meanwhile
UPDATE_ATTEMPTS = 3
#: Docker's defaults when the service sets none
DEFAULT_GRACE_S = 10.0
DEFAULT_STOP_SIGNAL = "SIGTERM"


class SwarmSettings(PluginSettings):
    """``executor: swarm``: one replicated service of a swarm."""

    kind: Literal["swarm"]
    #: the Swarm service; with ``stack``, its name in the stack file. Default: the Docktor service's name
    service: str | None = None
    #: the stack it was deployed as (``docker stack deploy ... STACK``): the service is ``STACK_service``
    stack: str | None = None
    #: how long to wait for scaled tasks to run (and be healthy) before calling it an error
    scale_timeout: PositiveSeconds = 60.0


def service_name(settings: SwarmSettings, docktor_service: str) -> str:
    """The Swarm service's name, as ``docker stack deploy`` names it."""
    base = settings.service or docktor_service
    return f"{settings.stack}_{base}" if settings.stack else base


def node_problem(info: dict[str, Any]) -> str | None:
    """Why this engine cannot scale services (not in a swarm, a worker node), or None."""
    swarm = info.get("Swarm") or {}
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active":
        return (
            f"the Docker engine at {engine_label()} is not part of an active swarm (node state {state!r}): "
            "run `docker swarm init` there, or point DOCKER_HOST at a manager node"
        )
    if not swarm.get("ControlAvailable"):
        return (
            f"the Docker engine at {engine_label()} is a Swarm worker node: Docktor needs a manager "
            "(point DOCKER_HOST at one; `docker node ls` on a manager lists them)"
        )
    return None


def mode_problem(name: str, spec: dict[str, Any]) -> str | None:
    mode = spec.get("Mode") or {}
    if "Replicated" in mode:
        return None
    kind = next(iter(mode), "unknown")
    what = {"Global": "global", "ReplicatedJob": "replicated-job", "GlobalJob": "global-job"}.get(kind, kind)
    return (
        f"Swarm service {name!r} is in {what} mode: Docktor scales replicated services only "
        "(`deploy: {mode: replicated}`); a global service runs one task per node by design"
    )


def replica_count(spec: dict[str, Any] | None) -> int | None:
    """The replica count a service spec asks for (None: not a replicated service's spec)."""
    value = (((spec or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas")
    return None if value is None else int(value)


# --------------------------------------------------------------------------- executor


class SwarmExecutor(DockerExecutor[SwarmSettings]):
    """Scales one replicated Swarm service through the Engine API and verifies it from its tasks."""

    Settings = SwarmSettings

    def __init__(self, settings: SwarmSettings, context: Context, *, collect_metrics: bool = True) -> None:
        super().__init__(settings, context, collect_metrics=collect_metrics)
        self.name = service_name(settings, context.service)
        self.scale_timeout = settings.scale_timeout
        self._node_id: str | None = None

    def __repr__(self) -> str:
        return f"SwarmExecutor(service={self.name!r})"

    @classmethod
    def describe(cls, settings: SwarmSettings) -> str:
        if settings.stack:
            return f"swarm {settings.stack}_{settings.service}" if settings.service else f"swarm stack {settings.stack}"
        return f"swarm {settings.service}" if settings.service else "swarm"

    @classmethod
    def grace_period(cls, settings: SwarmSettings) -> float:
        return 0.0  # the daemon stopping never stops Swarm tasks

    @classmethod
    def check(cls, settings: SwarmSettings, context: Context) -> list[str]:
        """Ask the engine, briefly: a worker node or a non-replicated service is refused."""
        name = service_name(settings, context.service)
        try:
            client = client_from_env(CHECK_TIMEOUT_S)
        except DockerException as e:
            return [f"cannot check Swarm service {name!r}: Docker engine: {short(e)}"]
        try:
            try:
                info = client.api.info()
            except (DockerException, OSError) as e:
                return [f"cannot check Swarm service {name!r}: Docker engine at {engine_label()}: {short(e)}"]
            if problem := node_problem(info):
                raise ExecutorError(problem)
            try:
                spec = client.api.inspect_service(name)["Spec"]
            except NotFound:
                return [f"no Swarm service {name!r} yet: deploy the stack first (docker stack deploy)"]
            except (DockerException, OSError) as e:
                return [f"cannot check Swarm service {name!r}: {short(e)}"]
            if problem := mode_problem(name, spec):
                raise ExecutorError(problem)
            return []
        finally:
            client.close()

    def target(self) -> str:
        """The engine and the Swarm service: two daemons (any configs) never scale the same one."""
        return f"{engine_address()}/swarm/{self.name}"

    async def last_scaled(self) -> LastScale | None:
        """The service's ``UpdatedAt`` when its last update changed the replica count (its
        ``PreviousSpec`` had another one): an update of the image or the environment is not a
        scale, and a service never updated has no last scale."""
        svc = await self._service()
        now, before = replica_count(svc.get("Spec")), replica_count(svc.get("PreviousSpec"))
        if now is None or before is None or now == before or not svc.get("UpdatedAt"):
            return None
        return LastScale(at=engine_time(svc["UpdatedAt"]), direction="up" if now > before else "down")

    # ----------------------------------------------------------------- reading

    async def _manager(self) -> None:
        """Once: the engine must be a swarm manager (an error per call otherwise)."""
        if self._node_id is not None:
            return
        info = await self._engine.call(lambda: self._engine.api.info())
        if problem := node_problem(info):
            raise ExecutorError(problem)
        self._node_id = (info.get("Swarm") or {}).get("NodeID") or ""

    async def _service(self) -> dict[str, Any]:
        await self._manager()
        try:
            svc: dict[str, Any] = await self._engine.call(lambda: self._engine.api.inspect_service(self.name), answers=True)
        except NotFound:
            raise ExecutorError(f"no Swarm service {self.name!r}: deploy the stack first (docker stack deploy)") from None
        except APIError as e:
            raise ExecutorError(self._explain(e)) from None
        if problem := mode_problem(self.name, svc.get("Spec") or {}):
            raise ExecutorError(problem)
        return svc

    def _explain(self, e: APIError) -> str:
        if e.status_code == 503:
            self._node_id = None  # ask again next time: it may have been demoted
            return f"Docker engine at {engine_label()}: {short(e)}"
        return f"Swarm service {self.name!r}: {short(e)}"

    async def _tasks(self, service_id: str) -> list[Task]:
        rows: list[dict[str, Any]] = await self._engine.call(lambda: self._engine.api.tasks(filters={"service": service_id}))
        # the filter matches name prefixes too (`web` matches `web2`): keep only this service's
        return [Task.from_api(self.name, t) for t in rows if t.get("ServiceID") == service_id]

    # ----------------------------------------------------------------- status

    async def status(self) -> ReplicaStatus:
        svc = await self._service()
        replicas = replica_count(svc["Spec"]) or 0
        view = View.of(replicas, await self._tasks(svc["ID"]))
        problems = view.problems()
        pending = [t for t in view.current.values() if not t.running and not t.failed]
        detail = "; ".join(problems)
        if pending and len(pending) > len(problems):
            detail = "; ".join(filter(None, [detail, f"{len(pending)} starting"]))
        metrics: dict[str, float] = {}
        if self.collect_metrics:
            metrics = await self._stats.recent(self._local_containers(svc, view))
        return ReplicaStatus(
            desired=replicas, running=len(view.running), failed=len(problems), healthy=True, detail=detail, metrics=metrics
        )

    def _local_containers(self, svc: dict[str, Any], view: View) -> list[tuple[str, int]]:
        """Running tasks on the node Docktor talks to: the only ones whose stats it can read."""
        limits = ((svc["Spec"].get("TaskTemplate") or {}).get("Resources") or {}).get("Limits") or {}
        memory = int(limits.get("MemoryBytes") or 0)
        return [(t.container, memory) for t in view.running if t.container and t.node == self._node_id]

    # ----------------------------------------------------------------- scale

    async def _scale(self, n: int, started: float, removed: list[RemovedReplica]) -> tuple[str, bool, int | None]:
        svc = await self._service()
        before = View.of(0, await self._tasks(svc["ID"]))
        known = {t.id for t in before.tasks}
        was_running = {t.id: t for t in before.running}
        container_spec = (svc["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}
        grace = float(container_spec.get("StopGracePeriod") or DEFAULT_GRACE_S * 1e9) / 1e9
        stop_signal = container_spec.get("StopSignal") or DEFAULT_STOP_SIGNAL

        updated = (time.monotonic(), time.time())
        warnings = await self._update(n)

        deadline = started + self.scale_timeout
        stable_since: float | None = None
        ended_at: dict[str, float] = {}
        while True:
            now = time.monotonic()
            tasks = await self._tasks(svc["ID"])
            view = View.of(n, tasks)
            by_id = {t.id: t for t in tasks}
            # the tasks Swarm took away: were running, no longer meant to
            leaving = [by_id.get(i) for i in was_running if i not in by_id or not by_id[i].wanted]
            for tid in was_running:
                t = by_id.get(tid)
                if (t is None or (not t.wanted and t.ended)) and tid not in ended_at:
                    ended_at[tid] = now
            problems = view.problems(since=known)
            if problems:
                await note_removed(self._engine, self._node_id, removed, was_running, by_id, ended_at, updated, grace, stop_signal)
                return f"scaling to {n} failed: {'; '.join(problems)}", False, len(view.running)
            still_stopping = [t for t in leaving if t is not None and not t.ended]
            settled = len(view.running) == n and len(view.current) == n and not still_stopping
            if settled:
                stable_since = stable_since or now
                if now - stable_since >= STABLE_S:
                    await note_removed(self._engine, self._node_id, removed, was_running, by_id, ended_at, updated, grace, stop_signal)
                    took = (stable_since - started) * 1000
                    gone = f"; removed tasks {', '.join(r.replica for r in removed)}" if removed else ""
                    note = f"; engine: {'; '.join(warnings)}" if warnings else ""
                    return f"{n} running after {took:.0f} ms{gone}{note}", True, n
            else:
                stable_since = None
            if now >= deadline and stable_since is None:
                await note_removed(self._engine, self._node_id, removed, was_running, by_id, ended_at, updated, grace, stop_signal)
                waiting = [t for t in view.current.values() if not t.running]
                why = ", ".join(f"{t.name} {t.state}" for t in sorted(waiting, key=lambda t: t.slot))
                stopping = f"; {len(still_stopping)} removed task(s) still stopping" if still_stopping else ""
                return (
                    f"scaling to {n} not done after {self.scale_timeout:g}s: {len(view.running)}/{n} running"
                    f"{f' ({why})' if why else ''}{stopping}",
                    False,
                    len(view.running),
                )
            await asyncio.sleep(POLL_S)

    async def _update(self, n: int) -> list[str]:
        """Set the replica count in the spec as read, with the version read; retry a stale version."""
        api = self._engine.api

        def update() -> list[str]:
            for attempt in range(UPDATE_ATTEMPTS):
                svc = api.inspect_service(self.name)
                spec = svc["Spec"]
                if problem := mode_problem(self.name, spec):
                    raise ExecutorError(problem)
                mode = {**spec["Mode"], "Replicated": {**spec["Mode"]["Replicated"], "Replicas": n}}
                try:
                    answer = api.update_service(
                        svc["ID"], svc["Version"]["Index"],
                        task_template=spec.get("TaskTemplate"), name=spec.get("Name"), labels=spec.get("Labels"),
                        mode=mode, update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
                        endpoint_spec=spec.get("EndpointSpec"),
                    )
                except APIError as e:
                    # someone (a deploy, a person) updated the service between our read and write
                    if "out of sequence" in str(e) and attempt + 1 < UPDATE_ATTEMPTS:
                        continue
                    raise
                return [str(w) for w in (answer or {}).get("Warnings") or []]
            raise AssertionError("unreachable")

        try:
            return await self._engine.call(update, answers=True)
        except NotFound:
            raise ExecutorError(f"no Swarm service {self.name!r}: deploy the stack first (docker stack deploy)") from None
        except APIError as e:
            raise ExecutorError(f"updating Swarm service {self.name!r} failed: {short(e)}") from None
