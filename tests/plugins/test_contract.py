"""The plugin contract suite (docktor.tools.testing) on every built-in plugin, against real peers.

Real servers give the healthy figures and the refused credentials: nats-server, Redis, RabbitMQ,
Prometheus (started once per module), real child processes for the local executor, a Compose
project and a Swarm stack on the Docker engine; for the Kubernetes executor, a stand-in API server
(docktor.tools.testing.KubeStandIn: none can be installed here). The faults a real server cannot
produce on demand come from stand-ins (docktor.tools.testing.standins): a server answering
garbage bytes, an HTTP server answering garbage JSON, one that accepts and never answers, a
closed port.

A peer that is absent skips its cases with the reason, or fails them under DOCKTOR_REQUIRE_*=1,
as the plugins' own tests do. A built-in plugin that breaks a rule is listed in its Case's
``xfail`` with the failure (strict: the day it is fixed, the entry must go).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from docktor.tools.executors.compose import ComposeExecutor
from docktor.tools.executors.keda import KedaExecutor
from docktor.tools.executors.kubernetes import KubernetesExecutor
from docktor.tools.executors.local import LocalExecutor
from docktor.tools.executors.swarm import SwarmExecutor
from docktor.tools.sdk import Context
from docktor.tools.sources.nats import NatsSource
from docktor.tools.sources.prometheus import PrometheusSource
from docktor.tools.sources.rabbitmq import RabbitMQSource
from docktor.tools.sources.redis import RedisSource
from docktor.tools.testing import (
    Case,
    ExecutorPeer,
    GarbageHttpServer,
    GarbageServer,
    KubeStandIn,
    SilentServer,
    SourcePeer,
    closed_port,
    executor_contract,
    source_contract,
)
from tests.support.kubeconfigs import write_kubeconfig
from tests.support.peers import DOCKER_SKIP_REASON, docker_ok, down, need, start_nats, unique_project
from tests.support.servers import Exporter, PrometheusServer, RabbitMQ, RedisServer
from tests.support.swarm_peers import deploy_stack, remove_stack, running_tasks, swarm_session, unique_stack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

#: every source reads with this timeout here: a silent peer's check takes about this long, and a read
#: that blocked the event loop for most of it is told from a one-time blocking set-up (loading the
#: system's CA bundle takes a few hundred milliseconds on a busy machine)
TIMEOUT = 2


def on_worker_of(peer: str) -> pytest.MarkDecorator:
    """A case's checks run on one worker (make test runs several): its module-scoped peer is
    started once, not once per worker. (The fixtures are looked up by name as each check runs,
    so tests/conftest.py cannot see them to group the cases itself.)"""
    return pytest.mark.xdist_group(f"contract-{peer}")


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment while the block runs (a module-scoped fixture's monkeypatch)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in values.items():
            env.setenv(name, value)
        yield


@dataclass(frozen=True)
class StandIns:
    garbage: GarbageServer  # bytes no protocol accepts
    silent: SilentServer  # accepts, never answers
    broken_json: GarbageHttpServer  # 200 OK, JSON cut off
    wrong_json: GarbageHttpServer  # 200 OK, well-formed JSON of another shape
    closed: int  # a port nothing listens on

    def http(self) -> list[str]:
        return [self.broken_json.url("http"), self.wrong_json.url("http")]


@pytest.fixture(scope="module")
def standins() -> Iterator[StandIns]:
    with (
        GarbageServer() as garbage, SilentServer() as silent,
        GarbageHttpServer() as broken, GarbageHttpServer(b'{"unexpected": [1, 2, 3]}') as wrong,
    ):
        yield StandIns(garbage, silent, broken, wrong, closed_port())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NATS JetStream

NATS_ENV = {"CONTRACT_NATS_USER": "docktor", "CONTRACT_NATS_PASSWORD": "contract-nats-password"}
NATS_AUTH = {"user_env": "CONTRACT_NATS_USER", "password_env": "CONTRACT_NATS_PASSWORD"}
NATS_FIGURES = {"queue.pending": 5, "queue.ack_pending": 0, "queue.backlog": 5, "queue.lag": 5, "queue.redelivered": 0}
RATES = {"queue.rate_in", "queue.rate_out"}


async def _nats_backlog(url: str) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url, user=NATS_ENV["CONTRACT_NATS_USER"], password=NATS_ENV["CONTRACT_NATS_PASSWORD"])
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="CONTRACT", subjects=["contract.>"]))
        await js.add_consumer("CONTRACT", ConsumerConfig(durable_name="WORKERS"))
        for i in range(5):
            await js.publish("contract.job", f"job {i}".encode())
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A nats-server that requires a user and password, with 5 messages waiting for WORKERS."""
    user, password = NATS_ENV.values()
    server = start_nats(tmp_path_factory.mktemp("nats") / "js", "--user", user, "--pass", password)
    try:
        asyncio.run(_nats_backlog(server.url))
        with environment(NATS_ENV):
            yield server
    finally:
        server.stop()


def _nats_block(url: str, **more: Any) -> dict[str, Any]:
    return {"kind": "nats", "url": url, "stream": "CONTRACT", "consumer": "WORKERS", "timeout": TIMEOUT, **NATS_AUTH, **more}


@pytest.fixture
def nats_peer(nats: Any, standins: StandIns) -> SourcePeer:
    """Through the JetStream API."""
    return SourcePeer(
        healthy=_nats_block(nats.url), expect=NATS_FIGURES, missing=RATES,
        unreachable=_nats_block(f"nats://127.0.0.1:{standins.closed}"),
        garbage=[_nats_block(f"nats://{standins.garbage.address}")],
        silent=_nats_block(f"nats://{standins.silent.address}"),
    )


@pytest.fixture
def nats_monitor_peer(nats: Any, standins: StandIns) -> SourcePeer:
    """Through the monitoring fallback (/jsz): the API's port is closed in every scenario."""
    api = f"nats://127.0.0.1:{standins.closed}"
    return SourcePeer(
        healthy=_nats_block(api, monitor_url=nats.monitor_url), expect=NATS_FIGURES, missing=RATES,
        unreachable=_nats_block(api, monitor_url=f"http://127.0.0.1:{standins.closed}"),
        garbage=[_nats_block(api, monitor_url=url) for url in standins.http()],
        silent=_nats_block(f"nats://{standins.silent.address}", monitor_url=standins.silent.url("http")),
    )


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Redis (no password) with a list of 3, a Celery queue of 2 waiting + 1 reserved, and a
    stream of 6 entries its group has not read."""
    import redis

    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    client = redis.Redis(port=server.port)
    try:
        client.rpush("contract-jobs", "a", "b", "c")
        client.rpush("celery", "m1", "m2")
        client.hset("unacked", "tag-1", json.dumps([{"body": "m0"}, "", "celery"]))
        client.xgroup_create("contract-events", "workers", id="0", mkstream=True)
        for i in range(6):
            client.xadd("contract-events", {"n": i})
        yield server
    finally:
        client.close()
        server.stop()


def _redis_peer(server: RedisServer, standins: StandIns, mode: dict[str, Any], expect: dict[str, float], missing: set[str]) -> SourcePeer:
    def block(url: str) -> dict[str, Any]:
        return {"kind": "redis", "url": url, "timeout": TIMEOUT, **mode}

    return SourcePeer(
        healthy=block(server.url), expect=expect, missing=missing,
        unreachable=block(f"redis://127.0.0.1:{standins.closed}/0"),
        garbage=[block(f"redis://{standins.garbage.address}/0")],
        silent=block(f"redis://{standins.silent.address}/0"),
        secrets={"password_env": "CONTRACT_REDIS_PASSWORD"},
    )


@pytest.fixture
def redis_list_peer(redis_server: RedisServer, standins: StandIns) -> SourcePeer:
    return _redis_peer(redis_server, standins, {"list": "contract-jobs"}, {"queue.pending": 3, "queue.backlog": 3}, set())


@pytest.fixture
def redis_celery_peer(redis_server: RedisServer, standins: StandIns) -> SourcePeer:
    expect = {"queue.pending": 2, "queue.ack_pending": 1, "queue.backlog": 3}
    return _redis_peer(redis_server, standins, {"celery_queue": "celery"}, expect, set())


@pytest.fixture
def redis_stream_peer(redis_server: RedisServer, standins: StandIns) -> SourcePeer:
    expect = {"queue.lag": 6, "queue.pending": 6, "queue.ack_pending": 0, "queue.backlog": 6, "queue.consumers": 0}
    return _redis_peer(redis_server, standins, {"stream": "contract-events", "group": "workers"}, expect, RATES)


# --------------------------------------------------------------------------- RabbitMQ

RABBIT_ENV = {"CONTRACT_RABBIT_USER": "guest", "CONTRACT_RABBIT_PASSWORD": "guest"}
RABBIT_AUTH = {"username_env": "CONTRACT_RABBIT_USER", "password_env": "CONTRACT_RABBIT_PASSWORD"}


def _rabbit_backlog(broker: RabbitMQ) -> None:
    """Declare ``contract-jobs`` and publish 4 messages to it, through the management API (the test's own client)."""
    broker.api("PUT", "queues/%2F/contract-jobs", json.dumps({"durable": True}).encode())
    for i in range(4):
        message = {"properties": {}, "routing_key": "contract-jobs", "payload": f"job {i}", "payload_encoding": "string"}
        assert broker.api("POST", "exchanges/%2F/amq.default/publish", json.dumps(message).encode()) == {"routed": True}


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A private broker with 4 messages ready in ``contract-jobs``, its statistics settled."""
    broker = RabbitMQ.start(tmp_path_factory.mktemp("rabbit"))
    try:
        _rabbit_backlog(broker)
        deadline = time.monotonic() + 120  # a bound on a busy machine, not an expectation
        while (seen := _queue_now(broker)) != {"ready": 4, "published": 4}:
            assert time.monotonic() < deadline, f"the broker's statistics never showed the 4 messages; last {seen}"
            time.sleep(0.2)
        with environment(RABBIT_ENV):
            yield broker
    finally:
        broker.stop()


def _queue_now(broker: RabbitMQ) -> dict[str, Any]:
    """The queue's figures as the broker's own statistics show them (they are published every second)."""
    try:
        q: Any = broker.api("GET", "queues/%2F/contract-jobs")
    except OSError as e:  # a queue declared a moment ago may answer 404 or 500 at first
        return {"error": str(e)}
    return {"ready": q.get("messages_ready"), "published": (q.get("message_stats") or {}).get("publish")}


def _rabbit_block(url: str) -> dict[str, Any]:
    return {"kind": "rabbitmq", "url": url, "queue": "contract-jobs", "timeout": TIMEOUT, "statistics_interval": 1, **RABBIT_AUTH}


@pytest.fixture
def rabbitmq_peer(rabbit: RabbitMQ, standins: StandIns) -> SourcePeer:
    """Through the management API, the ready count from the broker's own AMQP port."""
    return SourcePeer(
        healthy={**_rabbit_block(rabbit.url), "amqp_url": rabbit.amqp_url}, missing=RATES,
        expect={"queue.pending": 4, "queue.ack_pending": 0, "queue.backlog": 4, "queue.consumers": 0},
        unreachable=_rabbit_block(f"http://127.0.0.1:{standins.closed}"),
        garbage=[_rabbit_block(url) for url in standins.http()],
        silent=_rabbit_block(standins.silent.url("http")),
    )


@pytest.fixture
def rabbitmq_amqp_peer(rabbit: RabbitMQ, standins: StandIns) -> SourcePeer:
    """AMQP-only mode (a passive queue.declare): counts only."""
    return SourcePeer(
        healthy=_rabbit_block(rabbit.amqp_url), expect={"queue.pending": 4, "queue.consumers": 0},
        unreachable=_rabbit_block(f"amqp://127.0.0.1:{standins.closed}"),
        garbage=[_rabbit_block(f"amqp://{standins.garbage.address}")],
        silent=_rabbit_block(f"amqp://{standins.silent.address}"),
    )


# --------------------------------------------------------------------------- Prometheus

PROMQL = {"queue.backlog": "sum(contract_jobs_waiting)", "queue.lag": "sum(contract_no_such_series)"}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping a target that exposes ``contract_jobs_waiting 7``, once it answers 7."""
    target = Exporter("contract_jobs_waiting 7\n")
    server = None
    try:
        server = PrometheusServer.start(tmp_path_factory.mktemp("prometheus"), [target.target])
        query = urllib.parse.urlencode({"query": PROMQL["queue.backlog"]})
        deadline = time.monotonic() + 60
        while _instant(f"{server.url}/api/v1/query?{query}") != "7":
            assert time.monotonic() < deadline, "Prometheus never scraped the target"
            time.sleep(0.2)
        yield server
    finally:
        if server is not None:
            server.stop()
        target.stop()


def _instant(url: str) -> str | None:
    with urllib.request.urlopen(url, timeout=5) as r:
        result = json.loads(r.read())["data"]["result"]
    return str(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_peer(prometheus: PrometheusServer, standins: StandIns) -> SourcePeer:
    def block(url: str) -> dict[str, Any]:
        return {"kind": "prometheus", "url": url, "queries": PROMQL, "timeout": TIMEOUT}

    return SourcePeer(
        healthy=block(prometheus.url), expect={"queue.backlog": 7}, missing={"queue.lag"},
        unreachable=block(f"http://127.0.0.1:{standins.closed}"),
        garbage=[block(url) for url in standins.http()],
        silent=block(standins.silent.url("http")),
        secrets={"bearer_token_env": "CONTRACT_PROMETHEUS_TOKEN"},
    )


test_source_contract = source_contract(
    Case(NatsSource, peer="nats_peer", marks=[on_worker_of("nats")]),
    Case(NatsSource, peer="nats_monitor_peer", id="nats-monitor", marks=[on_worker_of("nats")]),
    Case(RedisSource, peer="redis_list_peer", id="redis-list", marks=[on_worker_of("redis")]),
    Case(RedisSource, peer="redis_celery_peer", id="redis-celery", marks=[on_worker_of("redis")]),
    Case(RedisSource, peer="redis_stream_peer", id="redis-stream", marks=[on_worker_of("redis")]),
    Case(RabbitMQSource, peer="rabbitmq_peer", marks=[on_worker_of("rabbitmq")]),
    Case(RabbitMQSource, peer="rabbitmq_amqp_peer", id="rabbitmq-amqp", marks=[on_worker_of("rabbitmq")]),
    Case(PrometheusSource, peer="prometheus_peer", marks=[on_worker_of("prometheus")]),
)


# --------------------------------------------------------------------------- executors

# Stops at once on SIGTERM (a worker that drains nothing): scale-in is quick and clean.
WORKER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nwhile True: time.sleep(0.2)"
CRASHER = "raise SystemExit(3)"


@pytest.fixture(scope="module")
def local_peer(tmp_path_factory: pytest.TempPathFactory) -> ExecutorPeer:
    """Real child processes of this test."""
    folder = tmp_path_factory.mktemp("local")

    def block(code: str) -> dict[str, Any]:
        return {"kind": "local", "command": [sys.executable, "-c", code], "stop_grace_period": 5}

    return ExecutorPeer(settings=block(WORKER), context=Context("contract-local", folder, folder / "state"), failing=block(CRASHER))


def service_files(worker: dict[str, Any]) -> str:
    """A compose (or stack) file: ``worker`` running :data:`WORKER`, and ``broken``, whose image
    does not exist (JSON is YAML, which both ``docker compose`` and ``docker stack`` read)."""
    python = {"image": "python:3.12-slim", "command": ["python", "-c", WORKER], "stop_grace_period": "5s"}
    broken: dict[str, Any] = {"image": "docktor-test/no-such-image:never"}
    if "deploy" in worker:  # a stack: the broken service starts at 0 replicas
        broken["deploy"] = {"replicas": 0}
    return json.dumps({"version": "3.8", "services": {"worker": {**python, **worker}, "broken": broken}}, indent=2)


@pytest.fixture(scope="module")
def compose_peer(tmp_path_factory: pytest.TempPathFactory, standins: StandIns) -> Iterator[ExecutorPeer]:
    """A throwaway Compose project (torn down at the end): a worker, and a service whose image does not exist."""
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    folder = tmp_path_factory.mktemp("compose")
    file = folder / "docker-compose.yaml"
    file.write_text(service_files({}))
    project = unique_project("docktor-contract")

    def block(service: str, scale_timeout: float) -> dict[str, Any]:
        return {"kind": "compose", "compose_file": str(file), "project": project, "compose_service": service, "scale_timeout": scale_timeout}

    try:
        yield ExecutorPeer(
            settings=block("worker", 60), context=Context("worker", folder, folder / "state"), failing=block("broken", 30),
            unreachable=block("worker", 60), unreachable_env={"DOCKER_HOST": f"tcp://127.0.0.1:{standins.closed}"},
        )
    finally:
        down(project, file)


@pytest.fixture(scope="module")
def swarm_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExecutorPeer]:
    """A stack on a single-node swarm (removed at the end): a worker, and a service whose image does not exist."""
    with swarm_session():
        folder = tmp_path_factory.mktemp("swarm")
        file = folder / "stack.yaml"
        file.write_text(service_files({"deploy": {"replicas": 1}}))
        stack = unique_stack()

        def block(service: str, scale_timeout: float) -> dict[str, Any]:
            return {"kind": "swarm", "stack": stack, "service": service, "scale_timeout": scale_timeout}

        try:
            deploy_stack(stack, file)
            wait_until("the stack's worker to run", lambda: len(running_tasks(f"{stack}_worker")) == 1, timeout=120, every=0.5)
            yield ExecutorPeer(
                settings=block("worker", 60), context=Context("worker", folder, folder / "state"),
                failing=block("broken", 30), unreachable=block("no-such-service", 30),
            )
        finally:
            remove_stack(stack)


@pytest.fixture(scope="module")
def kubernetes_peer(tmp_path_factory: pytest.TempPathFactory, standins: StandIns) -> Iterator[ExecutorPeer]:
    """A STAND-IN Kubernetes API server (no real one can be installed here): a Deployment whose pods
    start, and one whose pods wait on ImagePullBackOff; unreachable: a kubeconfig naming a closed port."""
    folder = tmp_path_factory.mktemp("kubernetes")
    with KubeStandIn({"contract-kube-token": None}, ready_after=0.2) as api:
        api.add_workload("Deployment", "worker", 1)
        api.add_workload("Deployment", "broken", 0, waiting="ImagePullBackOff")
        write_kubeconfig(folder / "kubeconfig", api.url, "contract-kube-token")
        write_kubeconfig(folder / "closed", f"http://127.0.0.1:{standins.closed}", "contract-kube-token")

        def block(workload: str, kubeconfig: str = "kubeconfig") -> dict[str, Any]:
            return {"kind": "kubernetes", "workload": workload, "kubeconfig": kubeconfig, "scale_timeout": 30, "request_timeout": 5}

        yield ExecutorPeer(
            settings=block("worker"), context=Context("worker", folder, folder / "state"),
            failing=block("broken"), unreachable=block("worker", "closed"),
        )


@pytest.fixture(scope="module")
def keda_peer(tmp_path_factory: pytest.TempPathFactory) -> ExecutorPeer:
    """The count served to KEDA, kept in the state folder: no backend to fail or be unreachable
    (the HPA acts later, out of the executor's sight), so those two checks do not apply."""
    folder = tmp_path_factory.mktemp("keda")
    return ExecutorPeer(settings={"kind": "keda", "initial_replicas": 1}, context=Context("contract-keda", folder, folder / "state"))


test_executor_contract = executor_contract(
    Case(LocalExecutor, peer="local_peer"),
    Case(KedaExecutor, peer="keda_peer"),
    Case(ComposeExecutor, peer="compose_peer", marks=[pytest.mark.docker, on_worker_of("compose")]),
    Case(SwarmExecutor, peer="swarm_peer", marks=[pytest.mark.docker, pytest.mark.swarm, on_worker_of("swarm")]),
    Case(KubernetesExecutor, peer="kubernetes_peer", marks=[on_worker_of("kubernetes")]),
)

