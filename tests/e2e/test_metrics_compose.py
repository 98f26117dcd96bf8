"""examples/nats-multi's ``monitoring`` profile on a real engine: the Prometheus container scrapes
the daemon on the host.

The stack comes up with ``docker compose --profile monitoring up`` under a unique project name and
free ports (NATS, Prometheus, Docktor's metrics); ``docktor daemon start --foreground`` runs on
the example's own docktor.yaml, whose ``metrics.listen`` stays on 127.0.0.1. The Prometheus
container reaches it through host networking; the test asks that Prometheus (not the daemon) for
the daemon's figures, and checks them against Docker's own count of consumer containers.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.examples import daemon, example_config
from tests.support.peers import (
    DOCKER_SKIP_REASON,
    REPO,
    compose,
    containers,
    docker_ok,
    down,
    free_port,
    need,
    unique_project,
    wait_for_consumer,
)
from tests.support.waiting import wait_until

EXAMPLE = REPO / "examples" / "nats-multi"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


def query(url: str, expr: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5) as r:
            return list(json.load(r)["data"]["result"])
    except OSError:
        return []  # not listening yet


def test_monitoring_profile_scrapes_the_daemon_on_the_host(tmp_path: Path) -> None:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    project = unique_project("docktor-monitoring")
    nats_port, prom_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,
        "NATS_PORT": str(nats_port),
        "NATS_MONITOR_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(prom_port),
        "DOCKTOR_METRICS_PORT": str(metrics_port),
        "RATE": "0",
        "BURST_INTERVAL": "0",
        "CHECK_INTERVAL": "1s",
    }
    file = EXAMPLE / "docker-compose.yaml"
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        compose(project, file, "--profile", "monitoring", "up", "-d", "--build", env=env, timeout=600)
        asyncio.run(wait_for_consumer(f"nats://127.0.0.1:{nats_port}"))
        config = example_config(EXAMPLE, tmp_path)
        assert yaml.safe_load(config.read_text())["metrics"] == {"listen": "127.0.0.1:${DOCKTOR_METRICS_PORT:-9464}"}
        with daemon(config, env) as read:
            def figure(expr: str) -> float | None:
                read()  # raises if the daemon died
                result = query(prom, expr)
                return float(result[0]["value"][1]) if result else None

            wait_until("the Prometheus container scrapes the daemon", lambda: figure('up{job="docktor"}') == 1, 120, every=0.5)
            wait_until("the consumer's replicas in Prometheus",
                       lambda: figure('docktor_replicas_current{service="consumer"}') is not None, 60, every=0.5)
            running = len(containers(project, "consumer", all=False))
            wait_until("Prometheus agrees with Docker",
                       lambda: figure('docktor_observation{service="consumer",metric="replicas.running"}') == running, 60, every=0.5)
            assert figure('docktor_replicas_max{service="consumer"}') == 10
            assert figure('docktor_observation{service="consumer",metric="queue.backlog"}') is not None
            decisions = figure('sum(docktor_decisions_total{service="consumer"})')
            assert decisions is not None and decisions >= 1
        # the daemon's endpoint is on loopback: the target Prometheus scraped says so
        with urllib.request.urlopen(f"{prom}/api/v1/targets", timeout=5) as r:
            targets = json.load(r)["data"]["activeTargets"]
        assert [t["scrapeUrl"] for t in targets] == [f"http://127.0.0.1:{metrics_port}/metrics"]
    finally:
        down(project, file, env={**env, "COMPOSE_PROFILES": "monitoring"})
