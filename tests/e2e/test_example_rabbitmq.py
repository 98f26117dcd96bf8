"""examples/rabbitmq end to end: the real stack (RabbitMQ with its management API, a producer, the
worker, nginx) on a real engine, the real daemon on the example's own docktor.yaml with the
default `docktor` policy. Outcomes are checked from Docker and from RabbitMQ, not from Docktor's
word. The stack is always torn down."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import pytest

from tests.support.examples import (
    ComposeStack,
    daemon,
    errors,
    example_config,
    executed,
    honoured_sigterm,
    outcomes_logged,
    removed_replicas,
)
from tests.support.peers import DOCKER_SKIP_REASON, REPO, compose, containers, docker_ok, down, free_port, need, unique_project
from tests.support.waiting import wait_until

EXAMPLE = REPO / "examples" / "rabbitmq"
USER, PASSWORD = "docktor", "e2e-secret-pw"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


@dataclass
class Stack(ComposeStack):
    project: str
    env: dict[str, str]
    amqp_port: int
    mgmt_port: int
    tmp: Path

    def queue(self) -> dict[str, Any]:
        """RabbitMQ's own view of the `jobs` queue (management API)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.mgmt_port}/api/queues/%2F/jobs")
        req.add_header("authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return {}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    project = unique_project("docktor-e2e-rmq")
    amqp_port, mgmt_port = free_port(), free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "RABBITMQ_PORT": str(amqp_port),
        "RABBITMQ_MGMT_PORT": str(mgmt_port),
        "RABBITMQ_USER": USER,
        "RABBITMQ_PASSWORD": PASSWORD,
        # the producer stays idle: the test makes the backlog itself, so it is known
        "RATE": "0",
        "BURST_INTERVAL": "0",
        "PROCESS_TIME_MS": "20",
        "CHECK_INTERVAL": "1s",
        "COOLDOWN_UP": "2s",
        "COOLDOWN_DOWN": "2s",
        "STABILIZATION": "3s",
        "TARGET_WAIT": "10s",
    }
    file = EXAMPLE / "docker-compose.yaml"
    s = Stack(project, env, amqp_port, mgmt_port, tmp_path)
    try:
        compose(project, file, "up", "-d", "--build", env=env, timeout=600)
        wait_until("the worker consumes from jobs", lambda: s.queue().get("consumers") == 1, 180, every=0.5)
        yield s
    finally:
        down(project, file, env=env)


async def _publish(port: int, n: int) -> None:
    conn = await aiormq.connect(f"amqp://{USER}:{PASSWORD}@127.0.0.1:{port}/")
    try:
        channel = await conn.channel()
        for i in range(n):
            await channel.basic_publish(f'{{"n": {i}}}'.encode(), routing_key="jobs",
                                        properties=aiormq.spec.Basic.Properties(delivery_mode=2))
    finally:
        await conn.close()


def test_burst_scales_the_worker_up_then_back_down_without_losing_a_job(stack: Stack) -> None:
    web_before = stack.web()
    assert len(web_before) == 2 and stack.workers() == 1
    n, peak = 4000, 1
    with daemon(example_config(EXAMPLE, stack.tmp), stack.env) as decisions:
        wait_until("the daemon has ticked twice", lambda: len(decisions()) >= 2, 90, every=0.5)
        asyncio.run(_publish(stack.amqp_port, n))

        def drained_after_scale_up() -> bool:
            nonlocal peak
            peak = max(peak, stack.workers())
            q = stack.queue()
            return peak >= 3 and q.get("messages") == 0 and (q.get("message_stats") or {}).get("ack") == n

        wait_until("the worker scaled up and the queue drained", drained_after_scale_up, 240, every=0.5)

        def back_to_one() -> bool:
            return stack.workers() == 1 and len(containers(stack.project, "worker")) == 1

        wait_until("the idle worker scaled back down to min_replicas", back_to_one, 180, every=0.5)
        # the last scale-in is logged as intent, then its outcome once the executor has verified it
        wait_until("every executed decision\'s outcome is logged", lambda: outcomes_logged(decisions()), 60, every=0.5)
        records = decisions()

    ups, downs = executed(records, "scale_up"), executed(records, "scale_down")
    assert ups and all(r["outcome"]["status"] == "ok" for r in ups), ups
    assert downs and all(r["outcome"]["status"] == "ok" for r in downs), downs
    # how each removed replica stopped: it finished what it held and exited on SIGTERM, no SIGKILL
    removed = removed_replicas(records)
    assert removed and all(honoured_sigterm(x["stopped"]) for x in removed), removed
    assert max(r["target_replicas"] for r in ups) == peak  # Docker saw what Docktor asked for
    assert not errors(records)
    # the default policy sized from this source's rates (read from RabbitMQ's counters)
    assert all(r["policy"] == "docktor" for r in records)
    assert any(r["observations"].get("queue.rate_in", 0) > 0 for r in records)
    assert any(r["observations"].get("queue.rate_out", 0) > 0 for r in records)
    assert all(r["observations"].get(k, 0) >= 0 for r in records for k in ("queue.rate_in", "queue.rate_out"))
    q = stack.queue()
    assert q["messages"] == 0 and q["message_stats"]["ack"] == n  # every job done once; scale-in lost none
    assert stack.web() == web_before  # the same two nginx containers, never restarted
    assert PASSWORD not in (stack.tmp / "daemon.out").read_text()
    assert PASSWORD not in (stack.tmp / "state" / "decisions.jsonl").read_text()
