"""examples/nats-swarm end to end: the stack deployed with ``docker stack deploy`` on a real engine
turned into a single-node swarm, the real daemon, real JetStream.

Each test deploys the example under a unique stack name with free host ports, runs
``docktor daemon start --foreground`` on the example's own docktor.yaml, which lists no service and
finds the consumer by its deploy.labels (short intervals through the variables the stack file
reads), and checks the outcome from the Engine API and from JetStream, not from Docktor's word.
The daemon runs on the host, in the place of the stack's own ``docktor`` service (deployed with 0
replicas: its image is built and run by tests/e2e/test_image.py); the labels' queue URLs are the
host's published ports. The stack is always removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.examples import daemon, executed, nats_multi_backlog, outcomes_logged, publish_events
from tests.support.peers import REPO, compose, free_port, unique_project, wait_for_consumer
from tests.support.swarm_peers import (
    deploy_stack,
    remove_stack,
    replicas_spec,
    running_tasks,
    service_tasks,
    swarm_session,
    unique_stack,
)
from tests.support.waiting import wait_until

EXAMPLE = REPO / "examples" / "nats-swarm"

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(480)]


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    with swarm_session():
        # the stack uses examples/nats-multi's images: `docker stack deploy` does not build
        multi = REPO / "examples" / "nats-multi" / "docker-compose.yaml"
        compose(unique_project("docktor-build"), multi, "build", "producer", "consumer", timeout=900)
        yield


@dataclass
class Stack:
    name: str
    env: dict[str, str]
    nats_url: str
    tmp: Path

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def consumers_running(self) -> int:
        return len(running_tasks(self.service("consumer")))

    def web(self) -> set[str]:
        return {t["ID"] for t in running_tasks(self.service("web"))}


@pytest.fixture
def stack(swarm: None, tmp_path: Path) -> Iterator[Stack]:
    name = unique_stack("dtk-e2e")
    port, monitor = free_port(), free_port()
    env = {
        "STACK": name,  # the example's docktor.yaml scales this stack's labelled services only
        "NATS_PORT": str(port),
        "NATS_MONITOR_PORT": str(monitor),
        # the daemon on the host plays the stack's docktor service, reaching NATS on the published ports
        "DOCKTOR_REPLICAS": "0",
        "DOCKTOR_NATS_URL": f"nats://127.0.0.1:{port}",
        "DOCKTOR_NATS_MONITOR_URL": f"http://127.0.0.1:{monitor}",
        "DISCOVER_INTERVAL": "1s",
        # the producer stays idle: the tests make the backlog themselves, so it is known
        "RATE": "0",
        "BURST_INTERVAL": "0",
        "PROCESS_TIME_MS": "20",
        "CHECK_INTERVAL": "1s",
        "COOLDOWN_UP": "2s",
        "COOLDOWN_DOWN": "2s",
        "STABILIZATION": "2s",
    }
    s = Stack(name, env, f"nats://127.0.0.1:{port}", tmp_path)
    try:
        deploy_stack(name, EXAMPLE / "stack.yaml", env=env)
        asyncio.run(wait_for_consumer(s.nats_url, timeout=180))
        wait_until("the stack's services to run", lambda: s.consumers_running() == 1 and len(s.web()) == 2, timeout=120, every=0.5)
        yield s
    finally:
        remove_stack(name)


def backlog(stack: Stack) -> int:
    """JetStream's own count of unfinished work for WEB_WORKERS."""
    return nats_multi_backlog(stack.nats_url)


def write_config(stack: Stack) -> Path:
    """The example's docktor.yaml, unchanged but for where its state lives (its own: the image's /state)."""
    doc = yaml.safe_load((EXAMPLE / "docktor.yaml").read_text())
    doc["state_dir"] = str(stack.tmp / "state")
    path = stack.tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_backlog_scales_consumer_up_drains_then_idle_scales_down(stack: Stack) -> None:
    web_before = stack.web()
    peak = 1

    with daemon(write_config(stack), stack.env) as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60, every=0.5)
        asyncio.run(publish_events(stack.nats_url, 4000))
        assert backlog(stack) > 500  # JetStream confirms the backlog the rules should see

        def drained_after_scale_up() -> bool:
            nonlocal peak
            peak = max(peak, stack.consumers_running())
            return peak >= 3 and backlog(stack) == 0

        wait_until("the consumer scaled up and the backlog drained", drained_after_scale_up, 180, every=0.5)

        def back_to_one() -> bool:
            nonlocal peak
            running = stack.consumers_running()
            peak = max(peak, running)
            records = decisions()
            return (running == 1 and replicas_spec(stack.service("consumer")) == 1
                    and bool(executed(records, "scale_down")) and outcomes_logged(records))

        wait_until("the idle consumer scaled back down to min_replicas", back_to_one, 240, every=0.5)
        records = decisions()

    ups, downs = executed(records, "scale_up"), executed(records, "scale_down")
    assert {r["service"] for r in records} == {stack.service("consumer")}  # the one labelled service
    assert ups and all(r["outcome"]["status"] == "ok" for r in ups), ups
    assert any("queue.backlog" in rule for r in ups for rule in r["matched_rules"])
    assert downs and all(r["outcome"]["status"] == "ok" for r in downs), downs
    assert max(r["target_replicas"] for r in ups) == peak  # the engine ran what Docktor asked for
    # every scale-in says which task went, and it drained (exit 0 on SIGTERM) rather than being killed
    removed = [x for r in downs for x in r["outcome"]["removed"]]
    assert len(removed) == sum(r["current_replicas"] - r["target_replicas"] for r in downs)
    assert all(x["replica"].startswith(stack.service("consumer") + ".") for x in removed)
    assert all(x["stopped"].startswith("exited with code 0 ") for x in removed), removed
    assert not [r for r in records if (r.get("outcome") or {}).get("status") == "error"]
    assert backlog(stack) == 0
    assert stack.web() == web_before  # the same two nginx tasks, never restarted


def test_advisory_mode_logs_decisions_and_never_changes_replicas(stack: Stack) -> None:
    counts: list[int] = []
    with daemon(write_config(stack), stack.env, "--advisory") as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60, every=0.5)
        asyncio.run(publish_events(stack.nats_url, 3000))

        def advised_up_a_few_times() -> bool:
            counts.append(stack.consumers_running())
            return sum(1 for r in decisions() if r["decision"] == "scale_up") >= 3

        wait_until("three scale-up decisions were logged", advised_up_a_few_times, 90, every=0.5)
        assert backlog(stack) > 500  # the backlog the advice was about is still there
        records = decisions()

    ups = [r for r in records if r["decision"] == "scale_up"]
    assert all(r["mode"] == "advisory" and r["executed"] is False and r["outcome"] is None for r in records)
    assert all(r["current_replicas"] == 1 and r["target_replicas"] > 1 for r in ups)
    tasks = [(t["Slot"], t["Status"]["State"], t["Status"].get("Err") or t["Status"].get("Message")) for t in
             service_tasks(stack.service("consumer"))]
    assert set(counts) == {1}, f"consumer tasks while advised: {counts}; tasks now: {tasks}"
    assert stack.consumers_running() == 1 and replicas_spec(stack.service("consumer")) == 1
