"""What the control-channel tests share (tests/runtime/test_control_channel.py and
test_control_who_acts.py): a config of local-executor services over one nats-server, its own run
folder, and the CLI on it (``Setup``), made and always stopped by the ``setup_factory`` fixture."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import docktor
from tests.support.daemons import kill_marked, marked_processes, records
from tests.support.jetstream import make_streams
from tests.support.peers import NatsServer

__all__ = ["setup_factory"]  # the fixtures: a test module takes them with `import *`


SERVICE = """
  - name: {name}
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)", "{marker}-{name}"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: {max}
    check_interval: 0.5s
    policy: rules
    scale_up_by: 1
    cooldown_up: 0s
    cooldown_down: 0s
    scale_down_stabilization: 0s
    queue: {{kind: nats, url: "{url}", stream: {stream}, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
"""


class Setup:
    """A config of local-executor services over one nats-server, its own run folder, and the CLI."""

    def __init__(self, tmp: Path, nats: NatsServer, services: dict[str, int], mode: str = "autonomous"):
        self.tmp = tmp
        self.nats = nats
        self.marker = f"docktor-ctl-{uuid.uuid4().hex[:8]}"
        self.config = tmp / "docktor.yaml"
        self.state = tmp / ".docktor"
        self.env = {"DOCKTOR_RUN_DIR": str(tmp / "run")}
        self.mode = mode
        self.write(services)

    def write(self, services: dict[str, int], **extra: str) -> None:
        body = "".join(SERVICE.format(name=n, python=sys.executable, marker=self.marker, max=m, url=self.nats.url,
                                      stream=n.upper()) for n, m in services.items())
        self.config.write_text(f"mode: {self.mode}\nservices:{body}")

    def cli(self, *args: str, timeout: float = 120) -> Any:
        return docktor(*args, "--config", str(self.config), env=self.env, timeout=timeout)

    def start(self) -> int:
        r = self.cli("daemon", "start")
        assert r.returncode == 0, r.stderr
        return int(self.status()["pid"])

    def status(self) -> dict[str, Any]:
        r = self.cli("daemon", "status", "--json")
        return json.loads(r.stdout)

    def replicas(self, name: str) -> list[int]:
        return sorted(marked_processes(f"{self.marker}-{name}"))

    def decisions(self, name: str, since: float = 0.0) -> list[dict[str, Any]]:
        from docktor.agent.timestamps import parse_rfc3339

        log = self.state / "decisions.jsonl"
        return [r for r in records(log, name) if parse_rfc3339(r["ts"]) >= since] if log.exists() else []

    def stop(self) -> None:
        self.cli("daemon", "stop", "--force", "-t", "30")
        kill_marked(self.marker)


@pytest.fixture
def setup_factory(tmp_path: Path, nats_server: NatsServer) -> Iterator[Any]:
    made: list[Setup] = []

    def make(services: dict[str, int], backlog: dict[str, int] | None = None, **kw: Any) -> Setup:
        asyncio.run(make_streams(nats_server.url, {n.upper(): (backlog or {}).get(n, 0) for n in services}))
        s = Setup(tmp_path, nats_server, services, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
