"""Docker Swarm for the tests: the shared engine turned into a single-node swarm, and stacks on it.

The engine is shared with other test runs (Compose tests, other engineers). :func:`swarm_session`
initialises a swarm (``docker swarm init --advertise-addr 127.0.0.1``) only when the engine is
not in one, and leaves it afterwards only if it initialised it and no service is left on it (a
concurrent run may still be using it). This engine supports host-mode publishing only (no ingress
routing mesh), so test stacks publish in ``mode: host`` or not at all.

Stacks are deployed with the ``docker`` CLI (``docker stack deploy``, which the Engine API has no
single call for) with ``--resolve-image never``: no registry is reachable, images are local.
Everything a test asserts is read through the Engine API, independently of the executor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from tests.peers import need, unique_project

SWARM_SKIP_REASON = "no Docker engine (with the docker CLI) reachable for Swarm tests (set DOCKER_HOST)"


@lru_cache(maxsize=1)
def swarm_possible() -> bool:
    import docker

    if shutil.which("docker") is None:
        return False
    try:
        docker.from_env(timeout=5).ping()
    except (docker.errors.DockerException, OSError):
        return False
    return True


def need_swarm() -> None:
    need(swarm_possible(), SWARM_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")


def client() -> Any:
    import docker

    return docker.from_env(timeout=60)


@contextmanager
def swarm_session() -> Iterator[None]:
    """The engine is a swarm manager inside; left as it was found (see the module doc)."""
    need_swarm()
    c = client()
    initialised = False
    if (c.info().get("Swarm") or {}).get("LocalNodeState") != "active":
        try:
            c.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
            initialised = True
        except Exception as e:  # another run initialised it at the same moment
            if (c.info().get("Swarm") or {}).get("LocalNodeState") != "active":
                raise RuntimeError(f"cannot turn the engine into a swarm: {e}") from e
    try:
        yield
    finally:
        if initialised and not c.services.list():
            c.swarm.leave(force=True)
        c.close()


def unique_stack(prefix: str = "dtk") -> str:
    # stack names end up in service and network names: short, lower-case
    return unique_project(prefix)


def docker_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def deploy_stack(name: str, file: Path, env: dict[str, str] | None = None) -> None:
    docker_cli("stack", "deploy", "--resolve-image", "never", "-c", str(file), name, env=env)


def remove_stack(name: str) -> None:
    """Remove the stack and wait until its services, containers and networks are gone; never raises."""
    c = client()
    try:
        subprocess.run(["docker", "stack", "rm", name], capture_output=True, timeout=120, check=False)
        label = f"com.docker.stack.namespace={name}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            left = (
                c.services.list(filters={"label": label})
                + c.containers.list(all=True, filters={"label": label})
                + c.networks.list(filters={"label": label})
            )
            if not left:
                return
            time.sleep(0.5)
    except Exception:
        pass
    finally:
        c.close()


def service_tasks(service: str) -> list[dict[str, Any]]:
    """The service's tasks, straight from the Engine API."""
    c = client()
    try:
        svc = c.api.inspect_service(service)
        return [t for t in c.api.tasks(filters={"service": svc["ID"]}) if t["ServiceID"] == svc["ID"]]
    finally:
        c.close()


def running_tasks(service: str) -> list[dict[str, Any]]:
    return [t for t in service_tasks(service) if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]


def replicas_spec(service: str) -> int:
    c = client()
    try:
        return int(c.api.inspect_service(service)["Spec"]["Mode"]["Replicated"]["Replicas"])
    finally:
        c.close()


def wait_for(what: str, cond: Any, timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)
