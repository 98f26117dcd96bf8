"""Scale one Docker Compose service, and verify with the engine itself that it worked.

Changing the count goes through the Compose CLI (so Compose keeps owning names, networks, the
config hash and container numbers); everything Docktor *reads* comes from the engine via the
docker SDK and Compose's labels, never from CLI text. ``DOCKER_HOST`` selects the engine for both.

Scale-in chooses the replicas itself (not running first, then the lowest CPU, ties to the
highest number), stops them with their stop signal and the grace period, waits for them to exit
and removes them before Compose sees the new count: workers should stop fetching and ack (or nak)
what they hold on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from docker.errors import DockerException, NotFound

from docktor.tools.executors.docker_engine import CALL_TIMEOUT_S, ContainerStats, Engine, client_from_env, short, timed_scale
from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    PluginSettings,
    PositiveSeconds,
    RemovedReplica,
    ReplicaStatus,
    ScaleOutcome,
    Seconds,
    redact_url,
    standard,
)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"


#: how long ``validate`` waits for the engine before saying it could not ask
CHECK_TIMEOUT_S = 5.0


def engine_warnings(project: str, service: str, compose_file: Path) -> list[str]:
    """What the engine says about the project, briefly: no containers yet, the service not running.

    Only warnings: the config may be for another machine, or checked before the stack is up,
    and an engine that cannot be reached is said once and never fails ``validate``.
    """
    engine = redact_url(os.environ.get("DOCKER_HOST") or "the default socket")
    up = f"docker compose -p {project} -f {compose_file} up -d"
    try:
        client = client_from_env(CHECK_TIMEOUT_S)  # asks the engine its API version: fails here when none answers
    except DockerException:
        return [f"cannot check project {project!r}: no Docker engine answers at {engine}"]
    try:
        rows = client.api.containers(all=True, filters={"label": [f"{PROJECT_LABEL}={project}", f"{ONEOFF_LABEL}=False"]})
    except (DockerException, OSError) as e:
        return [f"cannot check project {project!r}: Docker engine at {engine}: {short(e)}"]
    finally:
        client.close()
    if not rows:
        return [f"project {project!r} has no containers on the Docker engine at {engine} yet: start the stack "
                f"({up}), or set project: to the name it was started under"]
    mine = [r for r in rows if (r.get("Labels") or {}).get(SERVICE_LABEL) == service]
    running = sum(1 for r in mine if r.get("State") == "running")
    if running == 0:
        stopped = f" ({len(mine)} stopped)" if mine else ""
        return [f"service {service!r} of project {project!r} has no running container{stopped} "
                f"(to start it: {up} {service})"]
    return []


def replica_filters(project: str, service: str) -> dict[str, list[str]]:
    """The engine filter for a service's replicas, as Compose itself lists them (its
    ``projectFilter`` + ``serviceFilter`` + ``oneOffFilter(false)``). The ``oneoff=False`` label
    matters: an image Compose built carries the project and service labels, so every container
    run from it (``docker run``, a Swarm task, another project) inherits them, but only Compose
    sets ``oneoff`` on the containers it creates. ``docker compose run`` ones say ``True``."""
    return {"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}", f"{ONEOFF_LABEL}=False"]}

#: extra time the ``compose up`` command gets beyond scale_timeout (network/volume setup, builds)
COMPOSE_SLACK_S = 30.0
CLI_PROBE_TIMEOUT_S = 15.0
POLL_S = 0.5
#: restarts during one verification that make a replica "restart-looping" (one may be a hiccup)
RESTART_LOOP_COUNT = 2
#: how long all replicas must stay up before a scale counts as done
STABLE_S = 2.0
#: Docker's default stop timeout, when a container has none of its own
DOCKER_STOP_TIMEOUT_S = 10


# --------------------------------------------------------------------------- project name


def normalize_project_name(name: str) -> str:
    """Compose's rule: lower-case, keep ``[a-z0-9_-]``, start with a letter or digit."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def _dotenv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def default_project(compose_file: Path, env: dict[str, str] | None = None) -> str:
    """The project name Compose itself would use for ``-f compose_file`` with no ``-p``.

    Precedence as in Compose: ``COMPOSE_PROJECT_NAME`` (environment, then the project's ``.env``),
    the file's top-level ``name:``, then the compose file's directory name.
    """
    env = dict(os.environ) if env is None else env
    from_env = env.get("COMPOSE_PROJECT_NAME") or _dotenv(compose_file.parent / ".env").get("COMPOSE_PROJECT_NAME")
    if from_env:
        return normalize_project_name(from_env)
    try:
        doc = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        doc = None
    name = doc.get("name") if isinstance(doc, dict) else None
    if isinstance(name, str) and name and "$" not in name:
        return normalize_project_name(name)
    return normalize_project_name(compose_file.resolve().parent.name)


# --------------------------------------------------------------------------- compose CLI


def find_compose_cli(timeout: float = CLI_PROBE_TIMEOUT_S) -> list[str]:
    """``["docker", "compose"]`` when the v2 plugin works, else ``["docker-compose"]``.

    Raises :class:`ExecutorError` naming both when neither is usable.
    """
    tried: list[str] = []
    candidates: list[list[str]] = []
    if docker_bin := shutil.which("docker"):
        candidates.append([docker_bin, "compose"])
    else:
        tried.append("`docker compose` (no docker CLI on PATH)")
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    else:
        tried.append("`docker-compose` (not on PATH)")
    for cmd in candidates:
        label = "docker compose" if len(cmd) == 2 else "docker-compose"
        try:
            done = subprocess.run([*cmd, "version"], capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"`{label}` ({e})")
            continue
        if done.returncode == 0:
            return cmd
        tried.append(f"`{label}` (exit {done.returncode}: {_tail(done.stdout + done.stderr, 1) or 'no output'})")
    raise ExecutorError(
        "no Docker Compose CLI found: tried the `docker compose` v2 plugin and the standalone "
        f"`docker-compose`: {'; '.join(tried)}. Install Docker Compose v2."
    )


_PULL_FAILURE = re.compile(
    r"pull access denied|manifest unknown|manifest for .* not found|no such host|repository does not exist|"
    r"failed to solve|failed to resolve|no such image|toomanyrequests",
    re.I,
)


def _tail(output: bytes | str, lines: int = 3) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    rows = [r.strip() for r in text.splitlines() if r.strip()]
    errors = [r for r in rows if re.search(r"error|denied|not found|failed|invalid|no such", r, re.I)]
    chosen = list(dict.fromkeys(errors or rows))[-lines:]
    return " | ".join(chosen)[:600]


# --------------------------------------------------------------------------- replicas


@dataclass(frozen=True)
class Replica:
    """One container of the service, as the engine reports it."""

    id: str
    name: str
    number: int
    state: str  # created, running, restarting, exited, dead, paused, removing
    exit_code: int
    health: str | None  # None when the service has no healthcheck
    health_output: str
    restart_count: int
    oom_killed: bool
    stop_timeout: int | None
    stop_signal: str
    memory_limit: int

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in (None, "healthy")

    def problem(self, restarts_since: int | None = None) -> str | None:
        """Why this replica is failing, or ``None`` while it is fine or still starting.

        ``restarts_since``: the restart count when a scale began; restarts beyond it by
        :data:`RESTART_LOOP_COUNT` mean a loop even if the replica is up at this instant.
        """
        if self.state in ("exited", "dead"):
            oom = ", OOM-killed" if self.oom_killed else ""
            return f"replica {self.number} exited with code {self.exit_code}{oom}"
        looping = restarts_since is not None and self.restart_count - restarts_since >= RESTART_LOOP_COUNT
        if self.state == "restarting" or looping:
            return (
                f"replica {self.number} is restart-looping ({self.restart_count} restarts, "
                f"last exit code {self.exit_code})"
            )
        if self.health == "unhealthy":
            said = f": {self.health_output}" if self.health_output else ""
            return f"replica {self.number} is unhealthy{said}"
        return None

    @classmethod
    def from_attrs(cls, a: dict[str, Any]) -> Replica:
        state = a.get("State") or {}
        config = a.get("Config") or {}
        labels = config.get("Labels") or {}
        health = state.get("Health") or None
        log = (health or {}).get("Log") or []
        try:
            number = int(labels.get(NUMBER_LABEL, "0"))
        except ValueError:
            number = 0
        return cls(
            id=a["Id"],
            name=a.get("Name", "").lstrip("/"),
            number=number,
            state=state.get("Status", "unknown"),
            exit_code=int(state.get("ExitCode") or 0),
            health=health.get("Status") if health else None,
            health_output=(log[-1].get("Output") or "").strip()[:200] if log else "",
            restart_count=int(a.get("RestartCount") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            stop_timeout=config.get("StopTimeout"),
            stop_signal=config.get("StopSignal") or "SIGTERM",
            memory_limit=int((a.get("HostConfig") or {}).get("Memory") or 0),
        )


# --------------------------------------------------------------------------- executor


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


class ComposeExecutor(Executor[ComposeSettings]):
    """Scales one Compose service through the Compose CLI and verifies it through the engine."""

    Settings = ComposeSettings
    provides = standard("cpu.avg", "cpu.max", "mem.avg_mb", "mem.max_mb", "mem.avg_pct")

    def __init__(
        self,
        settings: ComposeSettings,
        context: Context,
        *,
        collect_metrics: bool = True,
        cli: Sequence[str] | None = None,
    ) -> None:
        super().__init__(settings, context)
        self.compose_file = context.path(settings.compose_file).resolve()
        self.project = settings.project or default_project(self.compose_file)
        self.service = settings.compose_service or context.service
        self.scale_timeout = settings.scale_timeout
        #: None: each container's own StopTimeout (the compose file's stop_grace_period)
        self.stop_grace_period = settings.stop_grace_period
        self.collect_metrics = collect_metrics
        self._cli = list(cli) if cli else None
        self._engine = Engine()
        self._stats = ContainerStats(self._engine)
        self._lock = asyncio.Lock()

    @classmethod
    def check(cls, settings: ComposeSettings, context: Context) -> list[str]:
        """The compose file exists, parses and has the service; a Compose CLI is installed."""
        found: list[str] = []
        path = context.path(settings.compose_file)
        service = settings.compose_service or context.service
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            found.append(f"compose_file {str(path)!r} does not exist")
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            found.append(f"compose_file {str(path)!r} cannot be read as YAML: {str(e).splitlines()[0]}")
        else:
            services = doc.get("services") if isinstance(doc, dict) else None
            if isinstance(services, dict) and service not in services:
                known = ", ".join(sorted(map(str, services))) or "none"
                found.append(f"compose_file {str(path)!r} has no service {service!r} (it has: {known})")
        try:
            find_compose_cli()
        except ExecutorError as e:
            found.append(str(e))
        project = settings.project or default_project(path)
        found += engine_warnings(project, service, path)
        return found

    def target(self) -> str:
        """The engine, project and service: two daemons (any configs) never scale the same one."""
        return f"{os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'}/{self.project}/{self.service}"

    async def last_scaled(self) -> Any:
        """The newest container's creation time (a ``LastScale`` going up, or None): Compose creates
        containers when it scales up, so a daemon that starts after a scale it did not record (its
        state lost, or a scale by hand) still waits out ``cooldown_up``. A scale-in leaves no trace."""
        from docktor.tools.sdk import LastScale

        def newest() -> float | None:
            import docker  # here, not at the top: read once per start

            client = docker.from_env(timeout=10)
            try:
                rows = client.api.containers(all=True, filters=replica_filters(self.project, self.service))
            finally:
                client.close()
            created = [float(r["Created"]) for r in rows if isinstance(r.get("Created"), int | float)]
            return max(created) if created else None

        at = await asyncio.to_thread(newest)
        return None if at is None else LastScale(at, "up")

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

    async def scale(self, replicas: int) -> ScaleOutcome:
        return await timed_scale(self._lock, replicas, self._scale)

    async def _scale(self, n: int, started: float, removed: list[RemovedReplica]) -> tuple[str, bool, int | None]:
        if self._cli is None:
            self._cli = await asyncio.to_thread(find_compose_cli)
        before = await self.replicas()
        baseline = {r.id: r.restart_count for r in before}

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
            hint = " (the image cannot be pulled or built)" if _PULL_FAILURE.search(output) else ""
            return f"docker compose up failed (exit {code}){hint}: {_tail(output, 2) or 'no output'}", False, now

        # verify with the engine: at least a short window even if Compose itself was slow
        deadline = max(started + self.scale_timeout, time.monotonic() + 2.0)
        ready_since: float | None = None
        while True:
            reps = await self.replicas()
            ready = [r for r in reps if r.ready]
            problems = [p for r in reps if (p := r.problem(restarts_since=baseline.get(r.id, 0))) is not None]
            if problems:
                return f"scaling to {n} failed: {'; '.join(problems)}", False, len(ready)
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
        """The ``count`` replicas to remove, each with why: not ready first, then not measured yet,
        then the lowest CPU (whole percent, from the last background reading), ties to the highest number."""
        cpu = self._stats.cpu_by_container() if self.collect_metrics else {}

        def rank(r: Replica) -> tuple[int, int, int]:
            if not r.ready:
                return (0, 0, -r.number)
            if r.id not in cpu:
                return (1, 0, -r.number)
            return (2, int(cpu[r.id]), -r.number)

        ordered = sorted(replicas, key=rank)
        chosen, kept = ordered[:count], ordered[count:]
        kept_cpu = ", ".join(f"{r.number}: {cpu[r.id]:.1f}%" for r in sorted(kept, key=lambda r: r.number) if r.id in cpu)
        out = []
        for r in chosen:
            level = rank(r)[0]
            if level == 0:
                why = f"not running ({r.state}{f', {r.health}' if r.health else ''})"
            elif level == 1:
                why = "no CPU reading yet (started since the last check)" if self.collect_metrics else "highest number"
            else:
                why = f"lowest CPU: {cpu[r.id]:.1f}%" + (f" (kept {kept_cpu})" if kept_cpu else "")
            out.append((r, why))
        return out

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
            return RemovedReplica(str(r.number), why, _how_it_stopped(r, state, took, grace))

        results = await asyncio.gather(*(one(r, why) for r, why in victims), return_exceptions=True)
        errors = [str(e) for e in results if isinstance(e, BaseException)]
        if errors:
            raise ExecutorError(f"stopping replicas failed: {'; '.join(errors)}")
        return [r for r in results if isinstance(r, RemovedReplica)]

    async def _compose(self, args: list[str], timeout: float) -> tuple[int, str]:
        assert self._cli is not None
        cmd = [*self._cli, "-p", self.project, "-f", str(self.compose_file), *args]
        env = {**os.environ, "COMPOSE_ANSI": "never"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=str(self.compose_file.parent),
                env=env,
            )
        except OSError as e:
            raise ExecutorError(f"cannot run {cmd[0]}: {e}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            raise ExecutorError(f"docker compose up did not finish within {timeout:g}s") from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode or 0, out.decode(errors="replace")

    async def close(self) -> None:
        self._stats.close()
        await self._engine.close()


def _how_it_stopped(r: Replica, state: dict[str, Any] | None, took: float, grace: float) -> str:
    if state is None:
        return "was already gone"
    if r.state != "running":
        return f"was {r.state}"
    code = int(state.get("ExitCode") or 0)
    # the engine sends SIGKILL once the grace period has passed: exit 137, after (about) the grace
    if code == 137 and took >= grace - 0.5:
        return f"ignored {r.stop_signal} for {grace:g} s: SIGKILL"
    return f"exited with code {code} {took:.1f} s after {r.stop_signal}"
