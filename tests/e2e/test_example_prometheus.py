"""examples/prometheus end to end: a worker exporting Prometheus metrics, a real Prometheus scraping
every replica (DNS service discovery), a Redis list as the queue, on a real engine; the real daemon
on the example's own docktor.yaml, whose rules read PromQL queries over the worker's metrics.
Outcomes are checked from Docker and from Redis, not from Docktor's word."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
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

EXAMPLE = REPO / "examples" / "prometheus"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


@dataclass
class Stack(ComposeStack):
    project: str
    env: dict[str, str]
    redis_port: int
    prom_port: int
    tmp: Path

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=5)

    def waiting_and_done(self) -> tuple[int, int]:
        r = self.redis()
        try:
            return int(r.llen("jobs")), int(r.get("example:done") or 0)
        finally:
            r.close()

    def scraped_workers(self) -> int:
        """How many worker replicas Prometheus scrapes successfully right now."""
        q = urllib.parse.urlencode({"query": 'count(up{job="worker"} == 1)'})
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/api/v1/query?{q}", timeout=5) as r:
                result = json.loads(r.read())["data"]["result"]
        except OSError:
            return 0
        return int(float(result[0]["value"][1])) if result else 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    project = unique_project("docktor-e2e-prom")
    redis_port, prom_port = free_port(), free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "REDIS_PORT": str(redis_port),
        "PROMETHEUS_PORT": str(prom_port),
        "RATE": "0",  # the producer stays idle: the test pushes its own jobs, so the count is known
        "BURST_INTERVAL": "0",
        "WORK_MS": "50",
        "CHECK_INTERVAL": "1s",
        "COOLDOWN_UP": "2s",
        "COOLDOWN_DOWN": "2s",
        "STABILIZATION": "3s",
    }
    file = EXAMPLE / "docker-compose.yaml"
    s = Stack(project, env, redis_port, prom_port, tmp_path)
    try:
        compose(project, file, "up", "-d", "--build", env=env, timeout=600)
        wait_until("Prometheus scrapes the worker", lambda: s.scraped_workers() == 1, 180, every=0.5)
        yield s
    finally:
        down(project, file, env=env)


def test_rules_on_the_workers_own_metrics_scale_up_then_back_down(stack: Stack) -> None:
    web_before = stack.web()
    assert len(web_before) == 2 and stack.workers() == 1
    n, peak = 1500, 1
    with daemon(example_config(EXAMPLE, stack.tmp), stack.env) as decisions:
        wait_until("the daemon has ticked twice", lambda: len(decisions()) >= 2, 90, every=0.5)
        r = stack.redis()
        r.rpush("jobs", *(json.dumps({"n": i}) for i in range(n)))
        r.close()

        scraped = 0

        def drained_after_scale_up() -> bool:
            nonlocal peak, scraped
            peak = max(peak, stack.workers())
            # Prometheus finds the replicas Docktor adds (its DNS discovery refreshes on its own
            # clock, so sample it all along rather than at the one moment the queue drains)
            scraped = max(scraped, stack.scraped_workers())
            return peak >= 3 and scraped >= 2 and stack.waiting_and_done() == (0, n)

        wait_until("the worker scaled up, Prometheus scraped the new replicas and the queue drained", drained_after_scale_up, 300, every=0.5)

        def back_to_one() -> bool:
            return stack.workers() == 1 and len(containers(stack.project, "worker")) == 1

        wait_until("the idle worker scaled back down to min_replicas", back_to_one, 240, every=0.5)
        # the last scale-in is logged as intent, then its outcome once the executor has verified it
        wait_until("every executed decision\'s outcome is logged", lambda: outcomes_logged(decisions()), 60, every=0.5)
        records = decisions()

    ups, downs = executed(records, "scale_up"), executed(records, "scale_down")
    assert ups and all(r["outcome"]["status"] == "ok" for r in ups), ups
    assert downs and all(r["outcome"]["status"] == "ok" for r in downs), downs
    # how each removed replica stopped: it finished what it held and exited on SIGTERM, no SIGKILL
    removed = removed_replicas(records)
    assert removed and all(honoured_sigterm(x["stopped"]) for x in removed), removed
    # the rules read the queries over the worker's metrics
    assert any(rule.startswith("queue.backlog") for r in ups for rule in r["matched_rules"]), ups
    assert all(any(rule.startswith("worker.busy") for rule in r["matched_rules"]) for r in downs), downs
    assert any(r["observations"].get("worker.busy", 0) > 0.5 for r in records)
    assert max(r["target_replicas"] for r in ups) == peak
    assert not errors(records)
    assert stack.waiting_and_done() == (0, n)  # every job done exactly once
    assert stack.web() == web_before
