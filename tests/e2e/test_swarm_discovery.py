"""``discover: {swarm_labels: true}`` end to end: the real daemon, a real engine turned into a
single-node swarm (tests/support/swarm_peers.py), real JetStream (nats-server on loopback).

The daemon starts with no service at all. Stacks deployed after it started carry Docktor's
settings in their ``deploy.labels`` (the service block flattened, as docs/configuration.md shows);
every service reads the same JetStream backlog, which nobody consumes, so each one Docktor scales
goes to its ``max_replicas``. What is checked comes from the Engine API (the services' specs and
running tasks) and the daemon's own log, not from Docktor's word: a labelled service created after
the start is scaled; one whose labels do not validate is one error line naming it and the label,
and is never touched, while the others keep scaling; a removed one is stopped; one labelled in
another stack than ``discover.swarm_stack`` is not this daemon's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.cli import docktor as cli_docktor
from tests.support.examples import daemon, outcomes_logged
from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer
from tests.support.swarm_peers import (
    client,
    deploy_stack,
    remove_stack,
    replicas_spec,
    running_tasks,
    swarm_session,
    unique_stack,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(420)]

# exits at once on SIGTERM, as a worker should
SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nwhile True: time.sleep(1)"


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    with swarm_session():
        yield


def labels(nats_url: str, **extra: str) -> dict[str, str]:
    """A worker's deploy.labels: docktor.yaml's service block, flattened."""
    return {
        "docktor.enable": "true",
        "docktor.min_replicas": "1",
        "docktor.max_replicas": "3",
        "docktor.policy": "rules",
        "docktor.check_interval": "1s",
        "docktor.cooldown_up": "1s",
        "docktor.queue.kind": "nats",
        "docktor.queue.url": nats_url,
        "docktor.queue.stream": "JOBS",
        "docktor.queue.consumer": "WORKERS",
        "docktor.rules.scale_up_when.0.metric": "queue.backlog",
        "docktor.rules.scale_up_when.0.op": ">",
        "docktor.rules.scale_up_when.0.value": "10",
        **extra,
    }


def stack_file(folder: Path, services: dict[str, dict[str, str]]) -> Path:
    doc = {"version": "3.8", "services": {
        name: {"image": "python:3.12-slim", "command": ["python", "-c", SLEEPER], "stop_grace_period": "2s",
               "deploy": {"replicas": 1, "labels": service_labels}}
        for name, service_labels in services.items()
    }}
    folder.mkdir(exist_ok=True)
    path = folder / f"stack-{len(services)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def scaled_to(service: str, n: int) -> bool:
    return replicas_spec(service) == n and len(running_tasks(service)) == n


def test_services_labelled_after_the_start_are_scaled_and_a_bad_label_set_is_reported_and_skipped(
        swarm: None, nats_server: NatsServer, tmp_path: Path) -> None:
    asyncio.run(make_stream(nats_server.url, backlog=40))  # 40 waiting, nobody consumes: scale up
    config = tmp_path / "docktor.yaml"
    stack = unique_stack("dtk-lbl")
    # this stack's services only: other tests' labelled services may share the engine
    config.write_text(f"state_dir: state\ndiscover: {{swarm_labels: true, interval: 1s, swarm_stack: {stack}}}\n")
    out = tmp_path / "daemon.out"
    first, second, bad = f"{stack}_first", f"{stack}_second", f"{stack}_bad"
    elsewhere = unique_stack("dtk-lbl-other")  # labelled, in another stack: not this daemon's
    try:
        with daemon(config, {}) as decisions:
            wait_until("the daemon has started, discovering",
                       lambda: decisions() == [] and "swarm labels: scaling the Swarm services" in out.read_text(), 60, every=0.5)
            # created after the daemon started
            deploy_stack(elsewhere, stack_file(tmp_path / "other", {"other": labels(nats_server.url)}))
            deploy_stack(stack, stack_file(tmp_path, {"first": labels(nats_server.url)}))
            wait_until("first scaled to its max_replicas, the scale's outcome logged",
                       lambda: scaled_to(first, 3) and outcomes_logged(decisions()), 120, every=0.5)

            # a second labelled service, and one whose labels do not validate, in the same stack
            deploy_stack(stack, stack_file(tmp_path, {
                "first": labels(nats_server.url),
                "second": labels(nats_server.url),
                "bad": labels(nats_server.url, **{"docktor.min_replicas": "lots"}),
            }))
            # the deploy set first back to the file's 1 replica: Docktor scales it up again
            wait_until("second and first scaled to their max_replicas",
                       lambda: scaled_to(second, 3) and scaled_to(first, 3) and outcomes_logged(decisions()), 120, every=0.5)
            refused = [line for line in out.read_text().splitlines() if f"swarm service {bad}:" in line]
            assert len(refused) == 1, out.read_text()  # once, not at every look
            assert "label docktor.min_replicas: Input should be a valid integer" in refused[0]
            assert "ERROR" in refused[0] and refused[0].endswith("skipped, the other services keep scaling")
            assert replicas_spec(bad) == 1 and len(running_tasks(bad)) == 1
            assert replicas_spec(f"{elsewhere}_other") == 1 and elsewhere not in out.read_text()
            records = decisions()
            assert {r["service"] for r in records} == {first, second}  # the bad one is never decided on
            ups = [r for r in records if r["decision"] == "scale_up" and r["executed"]]
            assert {r["service"] for r in ups} == {first, second}
            assert all(r["outcome"]["status"] == "ok" for r in ups), [r["outcome"] for r in ups]

            # removed while it runs: its loop stops, the others go on
            c = client()
            try:
                c.api.remove_service(second)
            finally:
                c.close()
            wait_until("the removed service's loop stopped",
                       lambda: any("swarm labels:" in line and f"stopped {second}" in line for line in out.read_text().splitlines()),
                       60, every=0.5)
            status = json.loads((tmp_path / "state" / "status.json").read_text())
            assert set(status["services"]) == {first}, status
    finally:
        remove_stack(stack)
        remove_stack(elsewhere)


def test_a_reload_that_points_discovery_at_a_stack_starts_its_labelled_services(
        swarm: None, nats_server: NatsServer, tmp_path: Path) -> None:
    """``docktor daemon reload`` re-reads discover: as the rest of the file: the labelled services
    of the stack it names from then on are found and scaled."""
    asyncio.run(make_stream(nats_server.url, backlog=40))
    stack = unique_stack("dtk-lbl-reload")
    config = tmp_path / "docktor.yaml"
    config.write_text(f"state_dir: state\ndiscover: {{swarm_labels: true, interval: 1s, swarm_stack: {stack}-not-yet}}\n")
    out = tmp_path / "daemon.out"
    worker = f"{stack}_worker"
    try:
        with daemon(config, {}) as decisions:
            deploy_stack(stack, stack_file(tmp_path, {"worker": labels(nats_server.url)}))
            wait_until("the daemon has started, discovering another stack",
                       lambda: f"(stack {stack}-not-yet)" in out.read_text(), 60, every=0.5)
            assert decisions() == [] and replicas_spec(worker) == 1
            config.write_text(f"state_dir: state\ndiscover: {{swarm_labels: true, interval: 1s, swarm_stack: {stack}}}\n")
            reloaded = cli_docktor("daemon", "reload", "--config", str(config))
            assert reloaded.returncode == 0, reloaded.stderr
            wait_until("the stack's labelled worker scaled to its max_replicas, the outcome logged",
                       lambda: scaled_to(worker, 3) and outcomes_logged(decisions()), 120, every=0.5)
            assert {r["service"] for r in decisions()} == {worker}
    finally:
        remove_stack(stack)
