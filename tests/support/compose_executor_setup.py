"""What the Compose executor's test modules share (tests/plugins/test_compose_executor_scaling.py and
test_compose_executor_status.py): tiny services (python:3.12-slim sleeping, plus ones that fail in
the ways the executor must report), a throwaway project per test, always torn down, and an executor
on one of its services."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from docktor.tools.executors.compose import ComposeExecutor, ComposeSettings
from docktor.tools.sdk import Context
from tests.support.peers import DOCKER_SKIP_REASON, docker_ok, down, need, unique_project

__all__ = ["project"]  # the fixtures: a test module takes them with `import *`


# On SIGTERM a worker writes a marker into a bind-mounted folder, then exits: proof that scale-in
# delivered SIGTERM and waited for the worker rather than killing it.
WORKER = textwrap.dedent(
    """
    import os, signal, socket, sys, time
    def bye(*_):
        time.sleep(0.3)  # "finishing the batch in hand"
        open(f"/drained/{socket.gethostname()}", "w").write("drained")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    while True:
        time.sleep(0.2)
    """
)


COMPOSE = """
services:
  worker:
    image: python:3.12-slim
    command: ["python", "-c", {worker}]
    stop_grace_period: 5s
    mem_limit: 256m
    volumes:
      - {drained}:/drained
  other:
    image: python:3.12-slim
    command: ["python", "-c", "import time\\nwhile True: time.sleep(1)"]
    deploy:
      replicas: 2
  burner:
    image: python:3.12-slim
    command: ["python", "-c", "while True: pass"]
  broken:
    image: docktor-test/no-such-image:never
  crasher:
    image: python:3.12-slim
    command: ["python", "-c", "raise SystemExit(3)"]
    restart: always
  exiter:
    image: python:3.12-slim
    command: ["python", "-c", "import time; time.sleep(0.5); raise SystemExit(4)"]
  stubborn:  # PID 1 without a handler: SIGTERM does nothing, the engine SIGKILLs after the grace
    image: python:3.12-slim
    command: ["python", "-c", "import time\\nwhile True: time.sleep(1)"]
    stop_grace_period: 1s
  sick:
    image: python:3.12-slim
    command: ["python", "-c", "import time\\nwhile True: time.sleep(1)"]
    healthcheck:  # the first probe is due after 30 s: "starting" for the whole test
      test: ["CMD", "python", "-c", "raise SystemExit(1)"]
      interval: 30s
"""


@dataclass
class Project:
    name: str
    file: Path
    drained: Path

    def executor(self, service: str, collect_metrics: bool = True, **settings: object) -> ComposeExecutor:
        return make_executor(self.file, self.name, service, collect_metrics=collect_metrics, **settings)


def make_executor(file: Path, project: str, service: str, collect_metrics: bool = True, **settings: object) -> ComposeExecutor:
    settings.setdefault("scale_timeout", 30.0)
    s = ComposeSettings.model_validate({"kind": "compose", "compose_file": file, "project": project, **settings})
    return ComposeExecutor(s, Context(service, file.parent, file.parent / "state"), collect_metrics=collect_metrics)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    drained = tmp_path / "drained"
    drained.mkdir()
    file = tmp_path / "docker-compose.yaml"
    file.write_text(COMPOSE.format(worker=json.dumps(WORKER), drained=drained))
    p = Project(unique_project(), file, drained)
    try:
        yield p
    finally:
        down(p.name, file)


def run(coro):  # the executor is async; these tests drive one call at a time
    return asyncio.run(coro)


async def scale_and_close(ex: ComposeExecutor, n: int):
    try:
        return await ex.scale(n)
    finally:
        await ex.close()
