"""examples/nats-multi end to end: the real stack on a real engine, the real daemon, real JetStream.

Each test brings the example up under a unique project name with free host ports, runs
``docktor daemon start --foreground`` on the example's own docktor.yaml (short intervals through
the environment variables it reads), and checks the outcome from Docker and from JetStream, not
from Docktor's word. The stack is always torn down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from tests.peers import (
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

EXAMPLE = REPO / "examples" / "nats-multi"
DOCKTOR = Path(sys.executable).with_name("docktor")

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    compose_file: Path
    nats_url: str
    tmp: Path
    samples: list[dict[str, Any]] = field(default_factory=list)

    def consumers_running(self) -> int:
        return len(containers(self.project, "consumer", all=False))

    def web(self) -> dict[str, str]:
        return {c.id: c.attrs["State"]["StartedAt"] for c in containers(self.project, "web")}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    project = unique_project("docktor-e2e")
    port, monitor = free_port(), free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,  # read by Compose and by Docktor's default project name
        "NATS_PORT": str(port),
        "NATS_MONITOR_PORT": str(monitor),
        "DOCKTOR_METRICS_PORT": str(free_port()),  # the example's metrics.listen, never a port another run holds
        # the producer stays idle: the tests make the backlog themselves, so it is known
        "RATE": "0",
        "BURST_INTERVAL": "0",
        "PROCESS_TIME_MS": "20",
        # Docktor's intervals, read by the example's docktor.yaml
        "CHECK_INTERVAL": "1s",
        "COOLDOWN_UP": "2s",
        "COOLDOWN_DOWN": "2s",
        "STABILIZATION": "2s",
    }
    file = EXAMPLE / "docker-compose.yaml"
    s = Stack(project, env, file, f"nats://127.0.0.1:{port}", tmp_path)
    try:
        compose(project, file, "up", "-d", "--build", env=env, timeout=600)
        asyncio.run(wait_for_consumer(s.nats_url))
        yield s
    finally:
        down(project, file, env=env)


async def _backlog(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        info = await nc.jetstream().consumer_info("EVENTS", "WEB_WORKERS", timeout=5)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    finally:
        await nc.close()


def backlog(stack: Stack) -> int:
    """JetStream's own count of unfinished work for WEB_WORKERS."""
    return asyncio.run(_backlog(stack.nats_url))


async def _publish(url: str, n: int) -> None:
    nc = await nats.connect(url, connect_timeout=2)
    try:
        js = nc.jetstream()
        for start in range(0, n, 250):
            await asyncio.gather(*(js.publish("events.web", b'{"test": true}') for _ in range(start, min(n, start + 250))))
    finally:
        await nc.close()


def publish(stack: Stack, n: int) -> None:
    asyncio.run(_publish(stack.nats_url, n))


def write_config(stack: Stack, *, mode: str, compose_file: Path | None = None) -> Path:
    """The example's docktor.yaml, unchanged but for where its state and compose file live."""
    doc = yaml.safe_load((EXAMPLE / "docktor.yaml").read_text())
    doc["mode"] = mode
    doc["state_dir"] = str(stack.tmp / "state")
    doc["compose_file"] = str(compose_file or stack.compose_file)
    path = stack.tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextmanager
def daemon(stack: Stack, config: Path, *args: str) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """``docktor daemon start --foreground``; yields a reader of its decision log; stops it on exit."""
    log = (stack.tmp / "daemon.out").open("wb")
    proc = subprocess.Popen(
        [str(DOCKTOR), "daemon", "start", "--config", str(config), "--foreground", *args],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **stack.env},
    )
    decisions = stack.tmp / "state" / "decisions.jsonl"

    def read() -> list[dict[str, Any]]:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}:\n{(stack.tmp / 'daemon.out').read_text()}")
        if not decisions.exists():
            return []
        from docktor.agent.runtime.decision_log import read_records

        return list(read_records(decisions))  # one per decision: intent and outcome lines merged

    try:
        yield read
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_until(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(every)


def executed(records: list[dict[str, Any]], decision: str) -> list[dict[str, Any]]:
    return [r for r in records if r["decision"] == decision and r["executed"]]


# --------------------------------------------------------------------------- tests


def test_backlog_scales_consumer_up_drains_then_idle_scales_down(stack: Stack) -> None:
    web_before = stack.web()
    assert len(web_before) == 2
    assert stack.consumers_running() == 1
    peak = 1

    with daemon(stack, write_config(stack, mode="autonomous")) as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60)
        publish(stack, 4000)
        assert backlog(stack) > 500  # JetStream confirms the backlog the rules should see

        def drained_after_scale_up() -> bool:
            nonlocal peak
            peak = max(peak, stack.consumers_running())
            return peak >= 3 and backlog(stack) == 0

        wait_until("the consumer scaled up and the backlog drained", drained_after_scale_up, 150)

        def back_to_one() -> bool:
            nonlocal peak
            running = stack.consumers_running()
            peak = max(peak, running)
            return running == 1 and len(containers(stack.project, "consumer")) == 1

        wait_until("the idle consumer scaled back down to min_replicas", back_to_one, 150)
        # the last scale-in's outcome line follows its intent once the executor has verified it
        wait_until("every executed decision's outcome is logged",
                   lambda: all(r["outcome"]["status"] != "unknown" for r in decisions() if r["executed"]), 60)
        records = decisions()

    ups, downs = executed(records, "scale_up"), executed(records, "scale_down")
    assert ups and all(r["outcome"]["status"] == "ok" for r in ups), ups
    assert any("queue.backlog" in rule for r in ups for rule in r["matched_rules"])
    assert downs and all(r["outcome"]["status"] == "ok" for r in downs), downs
    assert max(r["target_replicas"] for r in ups) == peak  # Docker saw what Docktor asked for
    assert not [r for r in records if (r.get("outcome") or {}).get("status") == "error"]
    assert backlog(stack) == 0
    assert stack.web() == web_before  # the same two nginx containers, never restarted


def test_advisory_mode_logs_decisions_and_never_changes_replicas(stack: Stack) -> None:
    counts: list[int] = []
    with daemon(stack, write_config(stack, mode="autonomous"), "--advisory") as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60)
        publish(stack, 3000)

        def advised_up_a_few_times() -> bool:
            counts.append(stack.consumers_running())
            return sum(1 for r in decisions() if r["decision"] == "scale_up") >= 3

        wait_until("three scale-up decisions were logged", advised_up_a_few_times, 60)
        assert backlog(stack) > 500  # the backlog the advice was about is still there
        records = decisions()

    ups = [r for r in records if r["decision"] == "scale_up"]
    assert all(r["mode"] == "advisory" and r["executed"] is False and r["outcome"] is None for r in records)
    assert all(r["current_replicas"] == 1 and r["target_replicas"] > 1 for r in ups)
    assert set(counts) == {1}
    assert stack.consumers_running() == 1
    assert len(containers(stack.project, "consumer")) == 1


def test_broken_image_is_an_error_outcome_and_backs_off_instead_of_looping(stack: Stack) -> None:
    # Someone pushed a consumer image that does not exist: same project, new containers need it.
    doc = yaml.safe_load(stack.compose_file.read_text())
    doc["services"]["consumer"].pop("build")
    doc["services"]["consumer"]["image"] = "docktor-test/missing-consumer:never"
    doc["services"]["producer"]["build"] = str(EXAMPLE / "producer")
    broken = stack.tmp / "docker-compose.yaml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    web_before = stack.web()

    with daemon(stack, write_config(stack, mode="autonomous", compose_file=broken)) as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60)
        publish(stack, 3000)
        wait_until("a scale-up was tried", lambda: bool(executed(decisions(), "scale_up")), 60)
        tried_at = time.monotonic()
        # keep ticking (every 1 s) well past the cooldown, inside the first 30 s back-off
        wait_until("ten more ticks", lambda: len(decisions()) >= 12 and time.monotonic() - tried_at > 10, 60)
        records = decisions()

    attempts = executed(records, "scale_up")
    assert len(attempts) == 1, [r["outcome"] for r in attempts]
    outcome = attempts[0]["outcome"]
    assert outcome["status"] == "error"
    assert "cannot be pulled" in outcome["message"]
    assert outcome["retry_at"]
    after = records[records.index(attempts[0]) + 1 :]
    assert len(after) >= 8
    held = [r for r in after if any(g["name"] == "backoff" for g in r["guardrails"])]
    assert held, "no later decision was held back by the back-off"
    assert stack.consumers_running() == 1  # the healthy replica kept running
    assert stack.web() == web_before
