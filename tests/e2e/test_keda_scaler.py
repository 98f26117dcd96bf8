"""``docktor keda`` as KEDA sees it: a real gRPC client asks what KEDA asks (GetMetricSpec once,
GetMetrics and IsActive every polling interval, the StreamIsActive push stream with a reconnect)
of a real ``docktor keda`` process reading a real NATS JetStream stream; the HPA's arithmetic on
the answers follows Docktor's count up through a burst and back down once it is drained.

Every answer is a decision of the service's own loop: the count KEDA is told is the target of a
decision in the log, which ``explain`` and ``/metrics`` show like any other.
"""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from docktor.agent.sim.kube import external_per_pod_replicas
from docktor.tools.testing import SilentServer
from tests.support.cli import docktor
from tests.support.daemons import records
from tests.support.jetstream import make_streams, publish, purge
from tests.support.keda_client import Keda, KedaProcess, keda_config, nats_queue, start_keda
from tests.support.peers import NatsServer, free_port, start_nats
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(240)

WORKER = {"service": "worker"}
#: KEDA's pollingInterval here (30 s by default): how often the client asks
POLL_S = 0.25
#: the slow service's source answers nothing; its read gives up after this long
SLOW_READ_S = 4
#: how long docktor keda lets any call wait for a decision
ANSWER_WITHIN_S = 1


def scaler_config(folder: Path, nats: NatsServer, silent: str, metrics_port: int) -> Path:
    """``worker`` (NATS JOBS, 100 messages per replica, 0-10) and ``slow`` (a source that never
    answers) under ``executor: keda``; ``local-one`` under the local executor (not KEDA's to ask about)."""
    return keda_config(folder, [
        {"name": "worker", "executor": "keda", "initial_replicas": 0, "min_replicas": 0, "max_replicas": 10,
         "scale_down_stabilization": "1s", "cooldown_down": 0, "scale_down_percent": 100, "queue": nats_queue(nats.url)},
        {"name": "slow", "executor": "keda", "initial_replicas": 2, "min_replicas": 1, "max_replicas": 5,
         "queue": nats_queue(f"nats://{silent}", timeout=SLOW_READ_S)},
        {"name": "local-one", "executor": "local", "command": [sys.executable, "-c", "import time; time.sleep(600)"],
         "stop_grace_period": "1s", "min_replicas": 0, "max_replicas": 1, "queue": nats_queue(nats.url, "OTHER")},
    ], mode="autonomous", metrics={"listen": f"127.0.0.1:{metrics_port}"})


class Stack:
    def __init__(self, nats: NatsServer, keda: KedaProcess, config: Path, state: Path, metrics_port: int) -> None:
        self.nats, self.keda, self.config, self.state, self.metrics_port = nats, keda, config, state, metrics_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("keda")
    nats = start_nats(folder / "js")
    try:
        asyncio.run(make_streams(nats.url, {"JOBS": 0, "OTHER": 0}))
        with SilentServer() as silent:
            metrics_port = free_port()
            config = scaler_config(folder, nats, silent.address, metrics_port)
            keda = start_keda(config, folder / "keda.out", "--answer-within", str(ANSWER_WITHIN_S))
            try:
                yield Stack(nats, keda, config, folder / "state", metrics_port)
            finally:
                assert keda.stop() == 0, keda.log_text()[-2000:]
    finally:
        nats.stop()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Keda]:
    keda = Keda(stack.keda.address)
    try:
        yield keda
    finally:
        await keda.close()


class Hpa:
    """What KEDA and the HPA do with the answers (a ScaledObject with minReplicaCount 0 and
    cooldownPeriod 0): inactive, KEDA holds the workload at 0; active, at least 1, then the HPA's
    AverageValue arithmetic on GetMetrics' value, its 10 % tolerance included."""

    def __init__(self, target: float) -> None:
        self.target, self.replicas = target, 0
        self.seen: list[tuple[float, bool, int]] = []

    async def poll(self, keda: Keda, metric: str) -> int:
        value, active = await keda.metric(WORKER, metric), await keda.active(WORKER)
        if not active:
            self.replicas = 0
        else:
            self.replicas = external_per_pod_replicas(max(1, self.replicas), value, self.target)
        self.seen.append((value, active, self.replicas))
        return self.replicas


async def next_answer(stream: Any, timeout: float = 60) -> bool:
    return bool((await asyncio.wait_for(stream.read(), timeout)).result)


async def test_a_burst_raises_the_count_keda_sets_and_it_settles_back(stack: Stack, client: Keda) -> None:
    spec = await client.spec(WORKER)  # asked once, when KEDA builds the HPA
    (metric,) = spec.metricSpecs
    assert (metric.metricName, metric.targetSizeFloat, metric.targetSize) == ("docktor-worker", 1.0, 1)
    hpa = Hpa(metric.targetSizeFloat)

    async def settled_at(n: int) -> bool:
        await asyncio.sleep(POLL_S)
        return await hpa.poll(client, metric.metricName) == n

    await eventually("the idle queue to keep the workload at 0", lambda: settled_at(0), timeout=60, every=0)
    stream = client.stream(WORKER)
    assert await next_answer(stream) is False  # the stream answers at once

    await publish(stack.nats.url, "jobs.x", 450)  # 450 waiting at 100 per replica: 5 replicas
    assert await next_answer(stream) is True  # pushed when the decision changed it
    await eventually("the HPA to land on 5 replicas", lambda: settled_at(5), timeout=60, every=0)

    stream.cancel()  # KEDA's operator restarts: it reconnects, and the new stream says where things are
    stream = client.stream(WORKER)
    assert await next_answer(stream) is True

    await purge(stack.nats.url, "JOBS")  # the burst is done
    assert await next_answer(stream) is False
    await eventually("the HPA to come back to 0", lambda: settled_at(0), timeout=60, every=0)
    stream.cancel()

    # Every value answered was Docktor's count, and the HPA set exactly that (outside its tolerance).
    for value, active, replicas in hpa.seen:
        assert replicas == (value if active else 0), hpa.seen
    assert {5.0, 0.0} <= {v for v, _, _ in hpa.seen}

    # Each count answered is a decision in the log, with its source, reason and envelope.
    decided = records(stack.state / "decisions.jsonl", "worker")
    executed = [r for r in decided if r.get("executed") and (r.get("outcome") or {}).get("status") == "ok"]
    assert [r["target_replicas"] for r in executed if r["target_replicas"] == 5], executed
    up = next(r for r in executed if r["target_replicas"] == 5)
    assert up["source"] == "policy" and up["envelope"] and "served to KEDA" in up["outcome"]["message"]
    assert executed[-1]["target_replicas"] == 0
    # ... and the daemon's log names it each time the count told to KEDA changed
    told = re.findall(r"worker: KEDA is told (\d+) \(decision (\w+) of ", stack.keda.log_text())
    by_id = {r["id"]: r for r in decided}
    assert {"5", "0"} <= {n for n, _ in told}, told
    for n, decision in told:
        rec = by_id[decision]
        in_force = rec["target_replicas"] if rec.get("executed") else rec["current_replicas"]
        assert in_force == int(n), (n, rec)

    explained = docktor("explain", "--config", str(stack.config), "-n", "50", "--service", "worker", "--changes")
    assert explained.returncode == 0, explained.stderr
    assert "-> 5" in explained.stdout and "served to KEDA" in explained.stdout and "-> 0" in explained.stdout

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as r:
        exposed = r.read().decode()
    assert 'docktor_replicas_target{service="worker"} 0.0' in exposed
    assert 'docktor_decisions_total{decision="scale_up",executed="true",service="worker",source="policy"}' in exposed


@pytest.mark.parametrize(("metadata", "code", "says"), [
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "the trigger's metadata has no 'service'"),
    ({"service": "nobody"}, grpc.StatusCode.NOT_FOUND, "no service 'nobody'"),
    ({"service": "local-one"}, grpc.StatusCode.FAILED_PRECONDITION, "service local-one has executor: local, not keda"),
    ({"service": "x" * 5000 + "\nforged line"}, grpc.StatusCode.NOT_FOUND, "no service 'xxxx"),  # echoed short, on one line
])
async def test_a_question_about_no_keda_service_is_refused_with_its_code(
    client: Keda, metadata: dict[str, str], code: grpc.StatusCode, says: str
) -> None:
    for ask in (client.spec(metadata), client.metric(metadata, "docktor-x"), client.active(metadata)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ask
        assert refused.value.code() == code
        details = refused.value.details() or ""
        assert says in details and "\n" not in details and len(details) < 300, details
    stream = client.stream(metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stream.read()
    assert refused.value.code() == code


async def test_a_slow_source_never_holds_keda_past_the_bound(stack: Stack, client: Keda) -> None:
    """The slow service's every read waits SLOW_READ_S for a peer that never answers. KEDA's call
    (its deadline well short of a read) is answered within ANSWER_WITHIN_S: UNAVAILABLE before any
    decision, then from the last decision, which the daemon's log says."""
    slow = {"service": "slow"}
    deadline = SLOW_READ_S - 1  # a call that waited for the read would fail with DEADLINE_EXCEEDED
    if not records(stack.state / "decisions.jsonl", "slow"):
        try:
            await client.metric(slow, "docktor-slow", timeout=deadline)
        except grpc.aio.AioRpcError as e:  # the first read has not ended: nothing to answer from
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            assert "no decision within 1 s, and none made before" in (e.details() or "")
    await eventually("the slow service's first decision", lambda: records(stack.state / "decisions.jsonl", "slow"), timeout=60)

    async def answered_from_the_last() -> bool:
        # every call returns within its deadline, with the count in force (initial_replicas: 2)
        assert await client.metric(slow, "docktor-slow", timeout=deadline) == 2.0
        assert await client.active(slow, timeout=deadline) is True
        return "slow: GetMetrics: no decision within 1 s: answered from the one of" in stack.keda.log_text()

    await eventually("an answer from the last decision while a read hangs", answered_from_the_last, timeout=60, every=0.2)
    last = records(stack.state / "decisions.jsonl", "slow")[-1]
    assert last["decision"] == "hold" and any("source" in e for e in last["errors"])
