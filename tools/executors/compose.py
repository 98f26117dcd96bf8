"""Scale one Docker Compose service, and verify with the engine itself that it worked.

Changing the count goes through the Compose CLI (:mod:`.compose_project`); everything Docktor
*reads* comes from the engine via the docker SDK and Compose's labels (:mod:`.compose_replicas`).
``DOCKER_HOST`` selects the engine for both.

Scale-in chooses the replicas itself (:mod:`.scale_in`: not running first, then the lowest CPU,
ties to the highest number), stops them with their stop signal and the grace period, waits for
them to exit and removes them before Compose sees the new count: workers should stop fetching and
ack (or nak) what they hold on SIGTERM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from docker.errors import NotFound

from docktor.tools.executors.compose_project import PULL_FAILURE, default_project, find_compose_cli, run_compose, tail
from docktor.tools.executors.compose_replicas import Replica, engine_warnings, how_it_stopped, replica_filters
from docktor.tools.executors.docker_engine import CALL_TIMEOUT_S, DockerExecutor, engine_address
from docktor.tools.executors.scale_in import idlest_first
from docktor.tools.sdk import (
    Context,
    ExecutorError,
    LastScale,
    PluginSettings,
    PositiveSeconds,
    RemovedReplica,
    ReplicaStatus,
    Seconds,
    Unworkable,
    one_line,
)
from docktor.tools.sdk.safe_yaml import YAMLTooBig, load_yaml

__all__ = ["ComposeExecutor", "ComposeSettings", "default_project", "find_compose_cli"]

#: extra time the ``compose up`` command gets beyond scale_timeout (network/volume setup, builds)
COMPOSE_SLACK_S = 30.0
POLL_S = 0.5
#: how long all replicas must stay up before a scale counts as done
STABLE_S = 2.0
#: Docker's default stop timeout, when a container has none of its own
DOCKER_STOP_TIMEOUT_S = 10


class ComposeSettings(PluginSettings):
    """``executor: compose``: one service of a Docker Compose project."""

    kind: Literal["compose"]
    #: the compose file, relative to the config file's folder
    compose_file: Path
    #: the Compose project; default: the name Compose itself derives (``COMPOSE_PROJECT_NAME``, ``name:``, the folder)
    project: str | None = None
    #: the Compose service to scale; default: the Docktor service's name
    compose_service: str | None = None
    #: how long to wait for scaled replicas to run (and be healthy) before calling it an error
    scale_timeout: PositiveSeconds = 60.0
    #: SIGTERM-to-SIGKILL grace at scale-in; default: each container's own (the compose file's stop_grace_period)
    stop_grace_period: Seconds | None = None


class ComposeExecutor(DockerExecutor[ComposeSettings]):
    """Scales one Compose service through the Compose CLI and verifies it through the engine."""

    Settings = ComposeSettings

    def __init__(
        self,
        settings: ComposeSettings,
        context: Context,
        *,
        collect_metrics: bool = True,
        cli: Sequence[str] | None = None,
    ) -> None:
        super().__init__(settings, context, collect_metrics=collect_metrics)
        self.compose_file = context.path(settings.compose_file).resolve()
        self.project = settings.project or default_project(self.compose_file)
        self.service = settings.compose_service or context.service
        self.scale_timeout = settings.scale_timeout
        #: None: each container's own StopTimeout (the compose file's stop_grace_period)
        self.stop_grace_period = settings.stop_grace_period
        self._cli = list(cli) if cli else None

    @classmethod
    def check(cls, settings: ComposeSettings, context: Context) -> list[str]:
        """The compose file exists, parses and has the service (else :class:`Unworkable`); a
        Compose CLI is installed (a warning: the config may be for another machine)."""
        found: list[str] = []
        path = context.path(settings.compose_file)
        service = settings.compose_service or context.service
        try:
            doc = load_yaml(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            found.append(Unworkable(f"compose_file {str(path)!r} does not exist"))
        except YAMLTooBig as e:  # its text is the line to show
            found.append(Unworkable(f"compose_file {str(path)!r} cannot be read as YAML: {e}"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            found.append(Unworkable(f"compose_file {str(path)!r} cannot be read as YAML: {one_line(e)}"))
        else:
            services = doc.get("services") if isinstance(doc, dict) else None
            if not isinstance(services, dict):
                found.append(Unworkable(f"compose_file {str(path)!r} has no services: mapping"))
            elif service not in services:
                known = ", ".join(sorted(map(str, services))) or "none"
                found.append(Unworkable(f"compose_file {str(path)!r} has no service {service!r} (it has: {known})"))
        try:
            find_compose_cli()
        except ExecutorError as e:
            found.append(str(e))
        project = settings.project or default_project(path)
        found += engine_warnings(project, service, path)
        return found

    def target(self) -> str:
        """The engine, project and service: two daemons (any configs) never scale the same one."""
        return f"{engine_address()}/{self.project}/{self.service}"

    async def last_scaled(self) -> LastScale | None:
        """The newest container's creation time (a ``LastScale`` going up, or None): Compose creates
        containers when it scales up, so a daemon that starts after a scale it did not record (its
        state lost, or a scale by hand) still waits out ``cooldown_up``. A scale-in leaves no trace."""
        rows = await self._call(lambda: self._engine.api.containers(all=True, filters=replica_filters(self.project, self.service)))
        created = [float(r["Created"]) for r in rows if isinstance(r.get("Created"), int | float)]
        return LastScale(max(created), "up") if created else None

    def __repr__(self) -> str:
        return f"ComposeExecutor(project={self.project!r}, service={self.service!r}, file={str(self.compose_file)!r})"

    # ----------------------------------------------------------------- engine access

    async def _call(self, fn: Any, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        return await self._engine.call(fn, *args, timeout=timeout)

    def _list_sync(self) -> list[Replica]:
        api = self._engine.api
        rows = api.containers(all=True, filters=replica_filters(self.project, self.service))
        out: list[Replica] = []
        for row in rows:
            try:
                out.append(Replica.from_attrs(api.inspect_container(row["Id"])))
            except NotFound:
                continue  # removed between the listing and the inspection
        return sorted(out, key=lambda r: r.number)

    def _exit_codes_sync(self, ids: Sequence[str], since: float) -> dict[str, int]:
        """Each container's last exit code since ``since``, from the engine's ``die`` events."""
        until = time.time()
        codes: dict[str, int] = {}
        events = self._engine.api.events(
            since=int(since), until=int(until) + 1, decode=True, filters={"event": "die", "container": list(ids)}
        )
        for event in events:
            actor = event.get("Actor") or {}
            code = (actor.get("Attributes") or {}).get("exitCode")
            if actor.get("ID") in ids and code is not None and str(code).lstrip("-").isdigit():
                codes[actor["ID"]] = int(code)
        return codes

    async def replicas(self) -> list[Replica]:
        """The service's containers (one-off ``run`` containers excluded), by container number."""
        result: list[Replica] = await self._call(self._list_sync)
        return result

    async def metrics(self, running: Sequence[Replica]) -> dict[str, float]:
        """CPU and memory over ``running``, read now; absent when any reading fails."""
        figures, _ = await self._stats.read([(r.id, r.memory_limit) for r in running])
        return figures

    # ----------------------------------------------------------------- status

    async def status(self) -> ReplicaStatus:
        replicas = await self.replicas()
        ready = [r for r in replicas if r.ready]
        problems = [p for r in replicas if (p := r.problem()) is not None]
        # a user's `docker compose stop` leaves exit code 0: stopped, not failed
        failed = [r for r in replicas if r.problem() is not None and not (r.state == "exited" and r.exit_code == 0)]
        running = [r for r in replicas if r.state == "running"]
        metrics = await self._stats.recent([(r.id, r.memory_limit) for r in running]) if self.collect_metrics else {}
        # Compose's replica count is the number of containers it keeps for the service (exited
        # ones included), so this also sees changes made by hand with `docker compose up --scale`
        desired = len(replicas)
        detail = "; ".join(problems)
        pending = [r for r in replicas if not r.ready and r.problem() is None]
        if pending:
            detail = "; ".join(filter(None, [detail, f"{len(pending)} starting"]))
        return ReplicaStatus(
            desired=desired, running=len(ready), failed=len(failed), healthy=True, detail=detail, metrics=metrics
        )

    # ----------------------------------------------------------------- scale

    async def _scale(self, n: int, started: float, removed: list[RemovedReplica]) -> tuple[str, bool, int | None]:
        if self._cli is None:
            self._cli = await asyncio.to_thread(find_compose_cli)
        before = await self.replicas()
        baseline = {r.id: r.restart_count for r in before}
        began = time.time() - 1

        victims = self.choose_victims(before, len(before) - n) if len(before) > n else []
        if victims:
            # Stopped and removed here, before Compose sees the count: Compose would pick the
            # highest numbers itself, busy or not, and its grace period would be implicit
            removed.extend(await self._remove(victims))

        code, output = await self._compose(
            ["up", "-d", "--no-deps", "--no-recreate", "--scale", f"{self.service}={n}", self.service],
            timeout=self.scale_timeout + COMPOSE_SLACK_S,
        )
        if code != 0:
            now = await self._count_ready()
            hint = " (the image cannot be pulled or built)" if PULL_FAILURE.search(output) else ""
            return f"docker compose up failed (exit {code}){hint}: {tail(output, 2) or 'no output'}", False, now

        # verify with the engine: at least a short window even if Compose itself was slow
        deadline = max(started + self.scale_timeout, time.monotonic() + 2.0)
        ready_since: float | None = None
        while True:
            reps = await self.replicas()
            ready = [r for r in reps if r.ready]
            exits: dict[str, int] = {}
            if any(r.state == "running" and r.looping(baseline.get(r.id, 0)) for r in reps):
                # up again at this instant: its own ExitCode is 0, the engine's events keep the last one
                exits = await self._call(self._exit_codes_sync, [r.id for r in reps], began)
            found = {r.id: r.problem(baseline.get(r.id, 0), exits.get(r.id)) for r in reps}
            problems = [p for p in found.values() if p is not None]
            if problems:
                # a restart-looping replica caught up between two crashes is not one that runs
                sound = sum(1 for r in ready if found[r.id] is None)
                return f"scaling to {n} failed: {'; '.join(problems)}", False, sound
            if len(ready) == n and len(reps) == n:
                ready_since = ready_since or time.monotonic()
                # a worker that crashes on start is "running" for a moment: require it to stay up
                if time.monotonic() - ready_since >= STABLE_S:
                    gone = f"; stopped replicas {', '.join(str(v.number) for v, _ in victims)}" if victims else ""
                    took = (ready_since - started) * 1000
                    return f"{n} running after {took:.0f} ms{gone}", True, n
            else:
                ready_since = None
            if time.monotonic() >= deadline and ready_since is None:
                waiting = [r for r in reps if not r.ready]
                why = ", ".join(f"replica {r.number} {r.state}{f' ({r.health})' if r.health else ''}" for r in waiting)
                extra = f"; {len(reps)} containers exist" if len(reps) != n else ""
                return (
                    f"scaling to {n} not done after {self.scale_timeout:g}s: {len(ready)}/{n} running"
                    f"{' and healthy' if any(r.health for r in reps) else ''}{f' ({why})' if why else ''}{extra}",
                    False,
                    len(ready),
                )
            await asyncio.sleep(POLL_S)

    def choose_victims(self, replicas: Sequence[Replica], count: int) -> list[tuple[Replica, str]]:
        """The ``count`` replicas to remove, each with why (:func:`.scale_in.idlest_first`; CPU from
        the last background reading)."""
        cpu = self._stats.cpu_by_container() if self.collect_metrics else {}
        return idlest_first(
            replicas,
            count,
            number=lambda r: r.number,
            running=lambda r: r.ready,
            cpu=lambda r: cpu.get(r.id),
            not_running=lambda r: f"not running ({r.state}{f', {r.health}' if r.health else ''})",
            unmeasured="no CPU reading yet (started since the last check)" if self.collect_metrics else "highest number",
        )

    async def _count_ready(self) -> int | None:
        try:
            return sum(1 for r in await self.replicas() if r.ready)
        except ExecutorError:
            return None

    async def _remove(self, victims: Sequence[tuple[Replica, str]]) -> list[RemovedReplica]:
        """Stop the victims concurrently (their stop signal, the grace period, then SIGKILL by the
        engine), wait for each to exit, and remove them; raise when any could not be stopped."""
        api = self._engine.api

        def stop_and_remove(r: Replica, grace: int) -> tuple[float, dict[str, Any] | None]:
            began = time.monotonic()
            try:
                api.stop(r.id, timeout=grace)  # returns once the container has exited
                state = api.inspect_container(r.id).get("State") or {}
                api.remove_container(r.id)
            except NotFound:
                return time.monotonic() - began, None  # already gone: nothing left to drain
            return time.monotonic() - began, state

        async def one(r: Replica, why: str) -> RemovedReplica:
            grace = self.stop_grace_period if self.stop_grace_period is not None else (r.stop_timeout or DOCKER_STOP_TIMEOUT_S)
            # the SDK extends its HTTP timeout by the grace period itself; our bound adds the same
            took, state = await self._call(stop_and_remove, r, int(round(grace)), timeout=grace + CALL_TIMEOUT_S)
            return RemovedReplica(str(r.number), why, how_it_stopped(r, state, took, grace))

        results = await asyncio.gather(*(one(r, why) for r, why in victims), return_exceptions=True)
        errors = [str(e) for e in results if isinstance(e, BaseException)]
        if errors:
            raise ExecutorError(f"stopping replicas failed: {'; '.join(errors)}")
        return [r for r in results if isinstance(r, RemovedReplica)]

    async def _compose(self, args: list[str], timeout: float) -> tuple[int, str]:
        assert self._cli is not None
        return await run_compose(self._cli, self.project, self.compose_file, args, timeout)
