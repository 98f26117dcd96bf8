"""What the Swarm executor's test modules share (tests/plugins/test_swarm_executor_scaling.py and
test_swarm_executor_engine.py): the stack each module deploys (``STACK``, a service per behaviour;
the engine supports host-mode publishing only, so the one service that publishes a port does it in
``mode: host``), an executor on one of its services, and running the executor's calls."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.executors.swarm import SwarmExecutor, SwarmSettings
from docktor.tools.sdk import Context
from tests.support.peers import free_port
from tests.support.swarm_peers import (
    deploy_stack,
    remove_stack,
    running_tasks,
    swarm_session,
    unique_stack,
)
from tests.support.waiting import wait_until

__all__ = ["stack"]  # the fixtures: a test module takes them with `import *`


# On SIGTERM it writes a marker into a bind-mounted folder after "finishing its batch", then exits.
WORKER = textwrap.dedent(
    """
    import os, signal, socket, sys, time
    def bye(*_):
        time.sleep(0.3)
        open(f"/drained/{socket.gethostname()}", "w").write("drained")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    while True:
        time.sleep(0.2)
    """
)


# Exits at once on SIGTERM, as a worker should: stopping it (a scale-in, the stack's removal)
# waits for no grace period. IGNORES_SIGTERM is the PID 1 without a handler (``stubborn``).
SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nwhile True: time.sleep(1)"


IGNORES_SIGTERM = "import time\nwhile True: time.sleep(1)"


STACK = """
version: "3.8"
services:
  worker:
    image: python:3.12-slim
    command: ["python", "-c", {worker}]
    stop_grace_period: 5s
    volumes:
      - {drained}:/drained
    deploy:
      replicas: 1
  other:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    deploy:
      replicas: 2
  stubborn:        # PID 1 without a handler ignores SIGTERM: killed after the grace period
    image: python:3.12-slim
    command: ["python", "-c", {ignores_sigterm}]
    stop_grace_period: 1s
    deploy:
      replicas: 2
  broken:
    image: docktor-test/no-such-image:never
    deploy:
      replicas: 0
  crasher:
    image: python:3.12-slim
    command: ["python", "-c", "raise SystemExit(3)"]
    deploy:
      replicas: 0
  picky:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    deploy:
      replicas: 0
      placement:
        constraints: ["node.labels.docktor-test-never == yes"]
  porty:           # one host port on a one-node swarm: a second task has nowhere to go
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    ports:
      - {{target: 8080, published: {port}, mode: host}}
    deploy:
      replicas: 1
  healthy:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    healthcheck:
      test: ["CMD", "python", "-c", "pass"]
      interval: 1s
    deploy:
      replicas: 0
  sick:            # the first probe is due after 60 s: "starting" for the whole test
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    healthcheck:
      test: ["CMD", "python", "-c", "raise SystemExit(1)"]
      interval: 60s
    deploy:
      replicas: 0
  everywhere:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    deploy:
      mode: global
"""


@dataclass
class Stack:
    name: str
    file: Path
    drained: Path
    tmp: Path

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def executor(self, short: str, **settings: Any) -> SwarmExecutor:
        s = SwarmSettings.model_validate({"kind": "swarm", "stack": self.name, "service": short, "scale_timeout": 30.0, **settings})
        return SwarmExecutor(s, Context(short, self.tmp, self.tmp / "state"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with swarm_session():
        tmp = tmp_path_factory.mktemp("swarm")
        drained = tmp / "drained"
        drained.mkdir()
        file = tmp / "stack.yaml"
        file.write_text(STACK.format(worker=json.dumps(WORKER), sleeper=json.dumps(SLEEPER), ignores_sigterm=json.dumps(IGNORES_SIGTERM),
                                 drained=drained, port=free_port()))
        s = Stack(unique_stack(), file, drained, tmp)
        try:
            deploy_stack(s.name, file)
            wait_until("the stack's services to run", lambda: len(running_tasks(s.service("other"))) == 2
                     and len(running_tasks(s.service("worker"))) == 1 and len(running_tasks(s.service("stubborn"))) == 2
                     and len(running_tasks(s.service("porty"))) == 1, timeout=120, every=0.5)
            yield s
        finally:
            remove_stack(s.name)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def scale(ex: SwarmExecutor, *counts: int) -> list[Any]:
    try:
        return [await ex.scale(n) for n in counts]
    finally:
        await ex.close()


async def status(ex: SwarmExecutor) -> Any:
    try:
        return await ex.status()
    finally:
        await ex.close()


def task_ids(service: str) -> set[str]:
    return {t["ID"] for t in running_tasks(service)}
