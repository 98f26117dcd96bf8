"""Helpers for tests that drive a real Docker engine with Compose v2 (no fixtures here).

Everything reads the engine through the docker SDK, the same way the executor does, but
independently of it, so a test checks the executor against the engine rather than against itself.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path

import docker
from docker.models.containers import Container

from tools.base import ExecutorError
from tools.compose_executor import NUMBER_LABEL, PROJECT_LABEL, SERVICE_LABEL, find_compose_cli

DOCKER_SKIP_REASON = "no Docker engine reachable (set DOCKER_HOST)"


@lru_cache(maxsize=1)
def docker_ok() -> bool:
    """An engine answers a ping and a Compose CLI exists."""
    try:
        docker.from_env(timeout=5).ping()
        find_compose_cli()
    except (docker.errors.DockerException, ExecutorError, OSError):
        return False
    return True


def unique_project(prefix: str = "docktor-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def compose(project: str, file: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run the Compose CLI; raise with its output when it fails."""
    cmd = [*find_compose_cli(), "-p", project, "-f", str(file), *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def down(project: str, file: Path, env: dict[str, str] | None = None) -> None:
    """Remove everything of the project; never raises (it runs in finalizers)."""
    try:
        subprocess.run(
            [*find_compose_cli(), "-p", project, "-f", str(file), "down", "-v", "--remove-orphans", "-t", "2"],
            capture_output=True, timeout=120, env={**os.environ, **(env or {})}, check=False,
        )
    except (OSError, subprocess.TimeoutExpired, ExecutorError):
        pass
    # anything Compose missed (e.g. containers created by hand with the labels)
    try:
        client = docker.from_env(timeout=30)
        for c in client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
            c.remove(force=True)
    except docker.errors.DockerException:
        pass


def containers(project: str, service: str, *, all: bool = True) -> list[Container]:
    client = docker.from_env(timeout=30)
    found = client.containers.list(
        all=all, filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]}
    )
    return sorted(found, key=lambda c: int(c.labels.get(NUMBER_LABEL, "0")))


def numbers(project: str, service: str) -> list[int]:
    """Container numbers of the service's running containers."""
    return [int(c.labels[NUMBER_LABEL]) for c in containers(project, service, all=False)]
