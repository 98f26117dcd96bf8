"""A Compose service's containers, as the engine reports them: how they are found, what is wrong
with one, and how a removed one stopped.

Read with the docker SDK from Compose's labels, never from CLI text. Text the engine relays from a
container (a healthcheck's output) is scrubbed of control characters before it reaches a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.errors import DockerException

from docktor.tools.executors.docker_engine import client_from_env, engine_label, short
from docktor.tools.sdk import scrub

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
#: restarts during one verification that make a replica "restart-looping" (one may be a hiccup)
RESTART_LOOP_COUNT = 2
#: how long ``validate`` waits for the engine before saying it could not ask
CHECK_TIMEOUT_S = 5.0


def replica_filters(project: str, service: str) -> dict[str, list[str]]:
    """The engine filter for a service's replicas, as Compose itself lists them (its
    ``projectFilter`` + ``serviceFilter`` + ``oneOffFilter(false)``). The ``oneoff=False`` label
    matters: an image Compose built carries the project and service labels, so every container
    run from it (``docker run``, a Swarm task, another project) inherits them, but only Compose
    sets ``oneoff`` on the containers it creates. ``docker compose run`` ones say ``True``."""
    return {"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}", f"{ONEOFF_LABEL}=False"]}


def engine_warnings(project: str, service: str, compose_file: Path) -> list[str]:
    """What the engine says about the project, briefly: no containers yet, the service not running.

    Only warnings: the config may be for another machine, or checked before the stack is up,
    and an engine that cannot be reached is said once and never fails ``validate``.
    """
    engine = engine_label()
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

    def looping(self, restarts_since: int | None) -> bool:
        """Restarting now, or restarted :data:`RESTART_LOOP_COUNT` times since ``restarts_since``."""
        return self.state == "restarting" or (
            restarts_since is not None and self.restart_count - restarts_since >= RESTART_LOOP_COUNT
        )

    def problem(self, restarts_since: int | None = None, last_exit: int | None = None) -> str | None:
        """Why this replica is failing, or ``None`` while it is fine or still starting.

        ``restarts_since``: the restart count when a scale began; restarts beyond it by
        :data:`RESTART_LOOP_COUNT` mean a loop even if the replica is up at this instant.
        ``last_exit``: the exit code of its last exit, from the engine's events: a restarted
        container's own ``ExitCode`` is 0 again while it runs.
        """
        if self.state in ("exited", "dead"):
            oom = ", OOM-killed" if self.oom_killed else ""
            return f"replica {self.number} exited with code {self.exit_code}{oom}"
        if self.looping(restarts_since):
            code = self.exit_code if self.state == "restarting" or last_exit is None else last_exit
            return f"replica {self.number} is restart-looping ({self.restart_count} restarts, last exit code {code})"
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
            health_output=scrub(log[-1].get("Output") or "")[:200] if log else "",
            restart_count=int(a.get("RestartCount") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            stop_timeout=config.get("StopTimeout"),
            stop_signal=config.get("StopSignal") or "SIGTERM",
            memory_limit=int((a.get("HostConfig") or {}).get("Memory") or 0),
        )


def how_it_stopped(r: Replica, state: dict[str, Any] | None, took: float, grace: float) -> str:
    if state is None:
        return "was already gone"
    if r.state != "running":
        return f"was {r.state}"
    code = int(state.get("ExitCode") or 0)
    # the engine sends SIGKILL once the grace period has passed: exit 137, after (about) the grace
    if code == 137 and took >= grace - 0.5:
        return f"ignored {r.stop_signal} for {grace:g} s: SIGKILL"
    return f"exited with code {code} {took:.1f} s after {r.stop_signal}"
