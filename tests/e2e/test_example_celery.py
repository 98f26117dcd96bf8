"""examples/celery-redis end to end: Redis, a real Celery worker (scaled), a producer and nginx on a
real engine; the real daemon on the example's own docktor.yaml (queue backlog per replica, CPU and
memory rules). Outcomes are checked from Docker and from Redis, not from Docktor's word."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

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

EXAMPLE = REPO / "examples" / "celery-redis"
SEP = "\x06\x16"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


@dataclass
class Stack(ComposeStack):
    project: str
    env: dict[str, str]
    port: int
    tmp: Path

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def backlog(self) -> int:
        """Redis's own count: tasks waiting in any priority list of `jobs`, plus reserved ones."""
        r = self.redis()
        try:
            waiting = sum(int(r.llen(k)) for k in ["jobs", *(f"jobs{SEP}{p}" for p in (3, 6, 9))])
            return waiting + int(r.hlen("unacked"))
        finally:
            r.close()

    def done(self) -> int:
        r = self.redis()
        try:
            return int(r.get("example:done") or 0)
        finally:
            r.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    project = unique_project("docktor-e2e-celery")
    port = free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "REDIS_PORT": str(port),
        "RATE": "0",  # the producer stays idle: the test sends its own tasks, so the count is known
        "BURST_INTERVAL": "0",
        "WORK_MS": "100",
        "CHECK_INTERVAL": "1s",
        "COOLDOWN_UP": "2s",
        "COOLDOWN_DOWN": "2s",
        "STABILIZATION": "3s",
    }
    file = EXAMPLE / "docker-compose.yaml"
    s = Stack(project, env, port, tmp_path)
    try:
        compose(project, file, "up", "-d", "--build", env=env, timeout=600)

        def worker_ready() -> bool:
            try:
                return s.redis().exists("_kombu.binding.jobs") == 1  # the worker declared its queue
            except redis.RedisError:
                return False

        wait_until("the Celery worker is consuming", worker_ready, 180, every=0.5)
        yield s
    finally:
        down(project, file, env=env)


def send(port: int, n: int) -> None:
    from celery import Celery

    app = Celery("example", broker=f"redis://127.0.0.1:{port}/0")
    try:
        for i in range(n):
            app.send_task("process", args=[i], queue="jobs")
    finally:
        app.close()


def test_burst_scales_the_celery_worker_up_then_back_down_without_losing_a_task(stack: Stack) -> None:
    web_before = stack.web()
    assert len(web_before) == 2 and stack.workers() == 1
    n, peak = 1500, 1
    with daemon(example_config(EXAMPLE, stack.tmp), stack.env) as decisions:
        wait_until("the daemon has ticked twice", lambda: len(decisions()) >= 2, 90, every=0.5)
        send(stack.port, n)

        def drained_after_scale_up() -> bool:
            nonlocal peak
            peak = max(peak, stack.workers())
            return peak >= 3 and stack.backlog() == 0 and stack.done() >= n

        wait_until("the worker scaled up and the queue drained", drained_after_scale_up, 300, every=0.5)

        def back_to_one() -> bool:
            return stack.workers() == 1 and len(containers(stack.project, "worker")) == 1

        wait_until("the idle worker scaled back down to min_replicas", back_to_one, 180, every=0.5)
        # the last scale-in is logged as intent, then its outcome once the executor has verified it
        wait_until("every executed decision\'s outcome is logged", lambda: outcomes_logged(decisions()), 60, every=0.5)
        records = decisions()

    ups, downs = executed(records, "scale_up"), executed(records, "scale_down")
    assert ups and all(r["outcome"]["status"] == "ok" for r in ups), ups
    assert any("queue.backlog_per_replica" in rule for r in ups for rule in r["matched_rules"])
    assert downs and all(r["outcome"]["status"] == "ok" for r in downs), downs
    # how each removed replica stopped: it finished what it held and exited on SIGTERM, no SIGKILL
    removed = removed_replicas(records)
    assert removed and all(honoured_sigterm(x["stopped"]) for x in removed), removed
    # the hybrid rules saw CPU and memory of the worker containers when they scaled in
    assert all({"cpu.avg", "mem.avg_pct"} <= r["observations"].keys() for r in downs), downs
    assert max(r["target_replicas"] for r in ups) == peak
    assert not errors(records)
    assert stack.done() == n and stack.backlog() == 0  # every task ran exactly once; scale-in lost none
    assert stack.web() == web_before
