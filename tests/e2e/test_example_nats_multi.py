"""examples/nats-multi end to end: the real stack on a real engine, the real daemon, real JetStream.

Each test brings the example up under a unique project name with free host ports, runs
``docktor daemon start --foreground`` on one of the example's own configs (short intervals through
the environment variables they read, where the test needs them), and checks the outcome from
Docker and from JetStream, not from Docktor's word. The stack is always torn down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from docktor.agent.timestamps import parse_rfc3339
from tests.support.examples import (
    burst_starts,
    daemon,
    example_config,
    executed,
    honoured_sigterm,
    nats_multi_backlog,
    publish_events,
    removed_replicas,
    sampling,
    settled_at,
)
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

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    compose_file: Path
    nats_url: str
    tmp: Path

    def consumers_running(self) -> int:
        return len(containers(self.project, "consumer", all=False))

    def web(self) -> dict[str, str]:
        return {c.id: c.attrs["State"]["StartedAt"] for c in containers(self.project, "web")}


@contextmanager
def started(tmp: Path, **env: str) -> Iterator[Stack]:
    """The example's stack under a unique project name and free host ports; ``env`` for Compose
    and for the example's configs (they read the same variables)."""
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    project = unique_project("docktor-e2e")
    port, monitor = free_port(), free_port()
    env = {
        "COMPOSE_PROJECT_NAME": project,  # read by Compose and by Docktor's default project name
        "NATS_PORT": str(port),
        "NATS_MONITOR_PORT": str(monitor),
        "DOCKTOR_METRICS_PORT": str(free_port()),  # the example's metrics.listen, never a port another run holds
        "PROCESS_TIME_MS": "20",
        **env,
    }
    file = EXAMPLE / "docker-compose.yaml"
    s = Stack(project, env, file, f"nats://127.0.0.1:{port}", tmp)
    try:
        compose(project, file, "up", "-d", "--build", env=env, timeout=600)
        asyncio.run(wait_for_consumer(s.nats_url))
        yield s
    finally:
        down(project, file, env=env)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The producer idle (the tests make the backlog themselves, so it is known) and Docktor's
    intervals short."""
    with started(tmp_path, RATE="0", BURST_INTERVAL="0", CHECK_INTERVAL="1s", COOLDOWN_UP="2s",
                 COOLDOWN_DOWN="2s", STABILIZATION="2s") as s:
        yield s


def backlog(stack: Stack) -> int:
    """JetStream's own count of unfinished work for WEB_WORKERS."""
    return nats_multi_backlog(stack.nats_url)


def publish(stack: Stack, n: int) -> None:
    asyncio.run(publish_events(stack.nats_url, n))


def write_config(stack: Stack, *, mode: str, name: str = "docktor.yaml", compose_file: Path | None = None) -> Path:
    """The example's config ``name``, unchanged but for where its state and compose file live."""
    return example_config(EXAMPLE, stack.tmp, name=name, mode=mode, compose_file=str(compose_file or stack.compose_file))


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("config", ["docktor.yaml", "docktor-go-rules.yaml"])
def test_backlog_scales_consumer_up_drains_then_idle_scales_down(stack: Stack, config: str) -> None:
    web_before = stack.web()
    assert len(web_before) == 2
    assert stack.consumers_running() == 1
    peak = 1

    with daemon(write_config(stack, mode="autonomous", name=config), stack.env) as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60, every=0.5)
        publish(stack, 4000)
        assert backlog(stack) > 500  # JetStream confirms the backlog the rules should see

        def drained_after_scale_up() -> bool:
            nonlocal peak
            peak = max(peak, stack.consumers_running())
            return peak >= 3 and backlog(stack) == 0

        wait_until("the consumer scaled up and the backlog drained", drained_after_scale_up, 150, every=0.5)

        def back_to_one() -> bool:
            nonlocal peak
            running = stack.consumers_running()
            peak = max(peak, running)
            return running == 1 and len(containers(stack.project, "consumer")) == 1

        wait_until("the idle consumer scaled back down to min_replicas", back_to_one, 150, every=0.5)
        # the last scale-in's outcome line follows its intent once the executor has verified it
        wait_until("every executed decision's outcome is logged",
                   lambda: all(r["outcome"]["status"] != "unknown" for r in decisions() if r["executed"]), 60, every=0.5)
        records = decisions()

    ups, downs = executed(records, "scale_up"), executed(records, "scale_down")
    assert ups and all(r["outcome"]["status"] == "ok" for r in ups), ups
    if config == "docktor-go-rules.yaml":
        assert any("queue.backlog" in rule for r in ups for rule in r["matched_rules"])
    else:  # the docktor policy sized it from what it measured
        assert all(r["source"] == "policy" and r["reason"].startswith("needs ") for r in ups), ups
    assert downs and all(r["outcome"]["status"] == "ok" for r in downs), downs
    # how each removed replica stopped: it finished what it held and exited on SIGTERM, no SIGKILL
    removed = removed_replicas(records)
    assert removed and all(honoured_sigterm(x["stopped"]) for x in removed), removed
    assert max(r["target_replicas"] for r in ups) == peak  # Docker saw what Docktor asked for
    assert not [r for r in records if (r.get("outcome") or {}).get("status") == "error"]
    assert backlog(stack) == 0
    assert stack.web() == web_before  # the same two nginx containers, never restarted


def test_advisory_mode_logs_decisions_and_never_changes_replicas(stack: Stack) -> None:
    counts: list[int] = []
    with daemon(write_config(stack, mode="autonomous"), stack.env, "--advisory") as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60, every=0.5)
        publish(stack, 3000)

        def advised_up_a_few_times() -> bool:
            counts.append(stack.consumers_running())
            return sum(1 for r in decisions() if r["decision"] == "scale_up") >= 3

        wait_until("three scale-up decisions were logged", advised_up_a_few_times, 60, every=0.5)
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

    with daemon(write_config(stack, mode="autonomous", compose_file=broken), stack.env) as decisions:
        wait_until("the daemon has ticked", lambda: len(decisions()) >= 2, 60, every=0.5)
        publish(stack, 3000)
        wait_until("a scale-up was tried", lambda: bool(executed(decisions(), "scale_up")), 60, every=0.5)
        tried_at = time.monotonic()
        # keep ticking (every 1 s) well past the cooldown, inside the first 30 s back-off
        wait_until("ten more ticks", lambda: len(decisions()) >= 12 and time.monotonic() - tried_at > 10, 60, every=0.5)
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


#: the producer's load in the bursts test and benchmarks/compose_stack.py: base, bursts, their period
BASE_RATE, BURST_RATE, BURST_EVERY, BURST_FOR = 80, 450, 60.0, 15.0
#: what the base load needs: one consumer handles about 48 msg/s (PROCESS_TIME_MS=20, BATCH_SIZE=10)
BASE_NEED = 2


def test_between_bursts_the_consumers_settle_near_the_base_load(tmp_path: Path) -> None:
    """docktor.yaml as shipped (the docktor policy, 5 s checks) under the producer's bursts: it
    rises for each burst and is back at the base load's 2 consumers before the next one, where the
    Go rules flap between 1 and 4 and, with Docktor's cooldowns, still hold 8-9 (docs/benchmarks.md,
    "Compose end to end", has the figures)."""
    load = {"RATE": str(BASE_RATE), "BURST_RATE": str(BURST_RATE), "BURST_INTERVAL": f"{BURST_EVERY:g}",
            "BURST_DURATION": f"{BURST_FOR:g}"}
    with started(tmp_path, **load) as stack, \
            daemon(write_config(stack, mode="autonomous"), stack.env) as decisions, \
            sampling(stack.nats_url, stack.project) as samples:
        def bursts() -> list[float]:
            decisions()  # raises if the daemon died
            return burst_starts(samples, (BASE_RATE + BURST_RATE) / 2)

        # the producer's first burst comes one period after it starts, then one per period
        wait_until("two bursts have begun", lambda: len(bursts()) >= 2, 3 * BURST_EVERY + 60, every=0.5)
        first, second = bursts()[:2]
        wait_until("the consumers rose for the second burst",
                   lambda: any(x.running > BASE_NEED for x in samples if x.t >= second), BURST_FOR + 30, every=0.5)
        records = decisions()
        consumer_logs = compose(stack.project, stack.compose_file, "logs", "--no-color", "--tail", "4", "consumer",
                                env=stack.env)

    cycle = [x for x in samples if first <= x.t < second]

    def why() -> str:
        """What happened, second by second, what Docktor said, and what the consumers printed."""
        seen = "\n".join(f"+{x.t - first:5.1f}s running {x.running} backlog {x.backlog}" for x in cycle[::4])
        said = "\n".join(f"{r['ts'][11:19]} {r['current_replicas']}->{r['target_replicas']} {r['reason']}"
                         for r in records if first - 5 <= parse_rfc3339(r["ts"]) < second)
        return f"\n{seen}\n{said}\n{consumer_logs}"

    assert max(x.running for x in cycle) >= 6, "the first burst needed about 10 consumers' worth" + why()
    settled = settled_at(samples, first, second, BASE_NEED)
    assert settled is not None, "not back at the base load when the second burst began" + why()
    # back at the base load's need well before the next burst (the cycle is BURST_EVERY long)
    assert settled - first <= BURST_EVERY - 10, f"settled {settled - first:.1f} s after the burst began" + why()
    held = [x.running for x in cycle if x.t >= settled]
    assert held and max(held) <= BASE_NEED
    assert not [r for r in records if (r.get("outcome") or {}).get("status") == "error"]
