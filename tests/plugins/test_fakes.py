"""The test kit's fakes (docktor.tools.testing): scripted as documented, keeping the plugin contract,
and run by the real daemon from a real config file.

The fakes are in-memory plugins, so these tests need no peer; they live beside the other plugin
tests because they check plugins, and the contract suite runs on them as on the built-in ones.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest

from docktor.agent.config.load import load_config
from docktor.agent.runtime.supervisor import Supervisor
from docktor.tools import registry
from docktor.tools.sdk import Context, ExecutorError, LastScale, SourceError, admit
from docktor.tools.testing import (
    Case,
    ExecutorPeer,
    FakeExecutor,
    FakeExecutorSettings,
    FakeFleet,
    FakeQueue,
    FakeSource,
    FakeSourceSettings,
    SourcePeer,
    executor_contract,
    source_contract,
)
from tests.support import fake_peers
from tests.support.clocks import FakeClock
from tests.support.fake_peers import TOKEN, TOKEN_ENV


def source(script: str, **settings: object) -> FakeSource:
    block = {"kind": "fake", "script": script, **settings}
    return FakeSource(FakeSourceSettings.model_validate(block), Context("svc", Path.cwd(), Path.cwd()))


def executor(script: str, **settings: object) -> FakeExecutor:
    block = {"kind": "fake", "script": script, **settings}
    return FakeExecutor(FakeExecutorSettings.model_validate(block), Context("svc", Path.cwd(), Path.cwd()))


# --------------------------------------------------------------------------- the fake source


async def test_readings_are_a_mapping_a_sequence_or_a_function_of_the_read() -> None:
    queue = FakeQueue("scripts", {"queue.backlog": 7})
    src = source("scripts")
    assert [await src.read() for _ in range(2)] == [{"queue.backlog": 7}] * 2
    queue.set([{"queue.backlog": 1}, {"queue.backlog": 2}])
    assert [(await src.read())["queue.backlog"] for _ in range(3)] == [1, 2, 2]  # the last one stays
    queue.set(lambda n: {"queue.backlog": 10.0 * n})
    assert [(await src.read())["queue.backlog"] for _ in range(3)] == [10.0, 20.0, 30.0]
    assert (queue.reads, queue.answered) == (8, 3)


async def test_rates_come_from_the_counters_between_reads_and_never_across_a_reset() -> None:
    clock = FakeClock()
    queue = FakeQueue("rates", {"queue.backlog": 5}, clock=clock).count(arrived=100, completed=90)
    src = source("rates")
    assert await src.read() == {"queue.backlog": 5}  # no baseline yet: no rates, not rates of 0
    queue.arrive(50)
    queue.complete(20)
    clock.advance(10)
    assert await src.read() == {"queue.backlog": 5, "queue.rate_in": 5.0, "queue.rate_out": 2.0}
    queue.count(arrived=3, completed=1)  # a re-created queue: counters went backwards
    clock.advance(10)
    assert await src.read() == {"queue.backlog": 5}
    queue.arrive(30)
    clock.advance(10)
    assert (await src.read())["queue.rate_in"] == 3.0
    queue.set({"queue.backlog": 5, "queue.rate_in": 99.0})  # a scripted value wins over a computed one
    clock.advance(10)
    assert (await src.read())["queue.rate_in"] == 99.0


async def test_the_rate_baseline_survives_a_restart_through_json() -> None:
    clock = FakeClock()
    queue = FakeQueue("restart", clock=clock).count(arrived=10, completed=0)
    before = source("restart")
    assert before.snapshot() is None  # nothing read: nothing to keep
    await before.read()
    clock.advance(4)  # the daemon saved its state 4 s after the read
    saved = json.loads(json.dumps(before.snapshot()))
    assert saved == {"v": 1, "age_s": 4.0, "arrived": 10.0, "completed": 0.0}
    after = source("restart")
    assert after.restore(saved, elapsed=6.0)  # 6 s down
    queue.arrive(50)
    queue.complete(20)
    assert await after.read() == {"queue.rate_in": 5.0, "queue.rate_out": 2.0}  # over 4 + 6 s
    assert after.restore({"v": 2}, 1.0) is False
    assert after.restore({"v": 1, "age_s": math.nan, "arrived": 1, "completed": 1}, 1.0) is False
    with pytest.raises(KeyError):
        after.restore({"v": 1, "age_s": 1}, 1.0)


async def test_faults_come_in_order_each_as_often_as_scripted() -> None:
    queue = FakeQueue("faults", {"queue.backlog": 3})
    src = source("faults", timeout=0.2)
    queue.fail("connection refused", times=2).garble().crash()
    for expected in ("fake queue 'faults': connection refused", "fake queue 'faults': connection refused",
                     "fake queue 'faults' answered garbage: not a reading"):
        with pytest.raises(SourceError) as caught:
            await src.read()
        assert str(caught.value) == expected
    with pytest.raises(RuntimeError, match="scripted plugin bug"):  # a bug, not a SourceError
        await src.read()
    assert await src.read() == {"queue.backlog": 3}
    queue.fail("down", times=None)
    for _ in range(3):
        with pytest.raises(SourceError, match="down"):
            await src.read()
    queue.clear()
    assert await src.read() == {"queue.backlog": 3}


async def test_a_stalled_peer_is_a_source_error_at_the_timeout_and_a_hang_ignores_it() -> None:
    queue = FakeQueue("slow", {"queue.backlog": 3}).stall()
    src = source("slow", timeout=0.2)
    began = time.monotonic()
    with pytest.raises(SourceError, match=r"timed out after 0.2s"):
        await asyncio.wait_for(src.read(), 10)
    assert time.monotonic() - began >= 0.2
    queue.hang(0.5)  # the plugin bug the daemon's own bound exists for
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(src.read(), 0.3)
    assert await src.read() == {"queue.backlog": 3}


async def test_a_token_is_presented_from_the_environment_and_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeQueue("guarded", {"queue.backlog": 1}, token="s3cret-token")
    monkeypatch.setenv("FAKE_TOKEN", "wrong-token")
    with pytest.raises(SourceError) as caught:
        await source("guarded", token_env="FAKE_TOKEN").read()
    assert str(caught.value) == "fake queue 'guarded' refused the token in FAKE_TOKEN"
    with pytest.raises(SourceError, match="without a token"):
        await source("guarded").read()
    monkeypatch.setenv("FAKE_TOKEN", "s3cret-token")
    assert await source("guarded", token_env="FAKE_TOKEN").read() == {"queue.backlog": 1}


async def test_values_pass_through_and_the_sdk_admits_only_what_a_metric_can_mean() -> None:
    FakeQueue("broken", {"queue.backlog": -5.0, "queue.pending": math.nan, "queue.rate_in": 2.0})
    src = source("broken")
    got = await src.read()
    kept, refused = admit(got, FakeSource.metrics_for(src.settings))
    assert kept == {"queue.rate_in": 2.0}
    assert refused == {"queue.backlog": "-5 is negative, which queue.backlog cannot be", "queue.pending": "nan is not a finite number"}


async def test_a_missing_queue_is_unreachable_and_the_queue_knows_its_sources() -> None:
    with pytest.raises(SourceError, match="no FakeQueue of that name"):
        await source("nobody-made-this").read()
    queue = FakeQueue("known", {"queue.backlog": 1})
    first, second = source("known"), source("known")
    assert queue.sources == [first, second]
    await first.close()
    assert first.closed and not second.closed
    with pytest.raises(RuntimeError, match="read after close"):
        await first.read()
    queue.forget()
    with pytest.raises(SourceError, match="no FakeQueue"):
        await second.read()
    assert FakeSource.describe(second.settings) == "fake queue known"
    assert set(FakeSource.metrics_for(second.settings)) == {"queue.backlog", "queue.pending", "queue.rate_in", "queue.rate_out"}


# --------------------------------------------------------------------------- the fake executor


async def test_scale_verifies_and_scale_in_removes_the_highest_numbers() -> None:
    fleet = FakeFleet("web", replicas=1, metrics={"cpu.avg": 40.0, "cpu.max": 70.0})
    ex = executor("web")
    up = await ex.scale(4)
    assert (up.ok, up.running, up.removed, up.message) == (True, 4, (), "1 -> 4 replicas running")
    status = await ex.status()
    assert (status.desired, status.running, status.failed, status.metrics) == (4, 4, 0, {"cpu.avg": 40.0, "cpu.max": 70.0})
    down = await ex.scale(2)
    assert down.ok and down.running == 2
    assert [(r.replica, r.why, r.stopped) for r in down.removed] == [
        ("4", "highest number", "exited with code 0 after SIGTERM"), ("3", "highest number", "exited with code 0 after SIGTERM"),
    ]
    assert sorted(fleet.replicas) == [1, 2] and fleet.scales == [4, 2]
    assert (await ex.scale(0)).ok and (await ex.status()).metrics == {}  # nothing runs: no CPU figure, not 0


async def test_a_refusal_and_replicas_that_fail_to_start_are_failed_outcomes() -> None:
    fleet = FakeFleet("api", replicas=2).refuse("image not found").fail_to_start(2)
    ex = executor("api")
    refused = await ex.scale(5)
    assert (refused.ok, refused.message, refused.running, fleet.desired) == (False, "image not found", 2, 2)
    partial = await ex.scale(5)
    assert not partial.ok and partial.running == 3
    assert partial.message == "scaling to 5 failed: replicas 4, 5 failed to start or crashed"
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (5, 3, 2)
    assert status.detail == "replicas 4, 5 failed to start or crashed"
    down = await ex.scale(3)  # the failed ones go first
    assert [r.replica for r in down.removed] == ["5", "4"] and all(r.stopped == "was not running" for r in down.removed)
    assert down.ok and fleet.replicas == {1: "running", 2: "running", 3: "running"}


async def test_a_replica_that_crashes_shows_in_status() -> None:
    fleet = FakeFleet("crashy", replicas=3)
    assert fleet.crash_replica() == 3
    status = await executor("crashy").status()
    assert (status.running, status.failed, status.detail) == (2, 1, "replica 3 failed to start or crashed")


async def test_a_slow_backend_fails_past_scale_timeout_and_lands_later() -> None:
    fleet = FakeFleet("slow", replicas=1).delay(0.1).delay(0.6)
    ex = executor("slow", scale_timeout=0.3)
    assert (await ex.scale(2)).ok  # within the timeout
    late = await ex.scale(4)
    assert not late.ok and late.message == "scaling to 4 not done after 0.3s: 2/4 running"
    deadline = time.monotonic() + 30
    while fleet.running != 4:  # the change lands when the delay ends
        assert time.monotonic() < deadline, "the delayed change never landed"
        await asyncio.sleep(0.05)


async def test_a_backend_that_is_down_or_missing_and_a_plugin_bug() -> None:
    fleet = FakeFleet("flaky", replicas=1).down("connection refused")
    ex = executor("flaky")
    with pytest.raises(ExecutorError, match="connection refused"):
        await ex.status()
    failed = await ex.scale(2)
    assert not failed.ok and failed.message == "fake fleet 'flaky': connection refused"
    fleet.up().crash()
    with pytest.raises(RuntimeError, match="scripted plugin bug"):
        await ex.status()
    assert (await ex.status()).running == 1
    with pytest.raises(ExecutorError, match="no FakeFleet"):
        await executor("nowhere").status()
    assert not (await executor("nowhere").scale(1)).ok


async def test_target_and_last_scaled_are_scripted_and_the_fleet_knows_its_executors() -> None:
    fleet = FakeFleet("named", target="fake:named", last_scaled=LastScale(1_700_000_000.0, "up"))
    ex = executor("named")
    assert ex.target() == "fake:named" and await ex.last_scaled() == LastScale(1_700_000_000.0, "up")
    assert fleet.executors == [ex]
    await ex.close()
    with pytest.raises(RuntimeError, match="after close"):
        await ex.status()
    assert executor("unknown").target() is None


async def test_an_in_process_fake_stops_its_replicas_when_closed() -> None:
    class InProcess(FakeExecutor):
        in_process = True  # replicas that live in the daemon, like the local executor's

    fleet = FakeFleet("inside", replicas=3)
    await executor("inside").close()
    assert fleet.running == 3  # the plain fake's replicas outlive it, as a Compose project's do
    await InProcess(FakeExecutorSettings(kind="fake", script="inside"), Context("svc", Path.cwd(), Path.cwd())).close()
    assert fleet.replicas == {} and fleet.desired == 0


# --------------------------------------------------------------------------- the contract, on the fakes


@pytest.fixture
def fake_queue_peer(monkeypatch: pytest.MonkeyPatch) -> SourcePeer:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return fake_peers.fake_queue_peer()


@pytest.fixture
def fake_fleet_peer(tmp_path: Path) -> ExecutorPeer:
    return fake_peers.fake_fleet_peer(tmp_path)


test_fake_source_contract = source_contract(Case(FakeSource, peer="fake_queue_peer"))
test_fake_executor_contract = executor_contract(Case(FakeExecutor, peer="fake_fleet_peer"))


# --------------------------------------------------------------------------- the daemon runs them


async def test_the_daemon_reads_and_scales_the_fakes_a_config_file_names(tmp_path: Path) -> None:
    (tmp_path / "docktor.yaml").write_text(
        "state_dir: state\n"
        "services:\n"
        "  - name: orders\n"
        "    executor: fake\n"
        "    queue: {kind: fake, timeout: 1s}\n"
        "    policy: target\n"
        "    target_per_replica: 10\n"
        "    min_replicas: 1\n"
        "    max_replicas: 8\n"
    )
    queue = FakeQueue("orders", {"queue.backlog": 45})
    fleet = FakeFleet("orders", replicas=1)
    with registry.installed(FakeSource, FakeExecutor):
        daemon = Supervisor(load_config(tmp_path / "docktor.yaml"))
        await daemon.open()
        try:
            [grown] = await daemon.run_once()
            queue.set({"queue.backlog": 0}).fail("connection refused")
            [held] = await daemon.run_once()
        finally:
            await daemon.close()
    assert (grown.decision, grown.current_replicas, grown.target_replicas, grown.executed) == ("scale_up", 1, 5, True)
    assert grown.outcome is not None and grown.outcome.status == "ok" and grown.observations["queue.backlog"] == 45
    # the source cannot read: missing data never scales in, whatever the backlog would have said
    assert (held.decision, held.current_replicas, held.executed) == ("hold", 5, False)
    assert held.errors == ["source: fake queue 'orders': connection refused"]
    assert fleet.scales == [5] and fleet.running == 5
    [src], [ex] = queue.sources, fleet.executors  # the very instances the daemon created, closed by it
    assert src.closed and ex.closed and queue.reads == 2
