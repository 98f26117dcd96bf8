"""Rate baselines across a daemon restart (``Source.snapshot`` / ``Source.restore``), against real
servers: NATS JetStream, a Redis stream, RabbitMQ's management API.

Each test reads with one source instance (the daemon before the restart), takes its snapshot
through JSON (as the state file stores it), and hands it to a new instance (the daemon after the
restart) with the wall-clock time that passed. The first read of the new instance then has exact
rates over the whole interval, where without the snapshot it has none; a queue re-created while
the daemon was down gives no rates, never a negative one.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.sources.nats import NatsSettings, NatsSource
from docktor.tools.sources.rabbitmq import RabbitMQSettings, RabbitMQSource
from docktor.tools.sources.redis import RedisSettings, RedisSource
from tests.support.clocks import FakeClock
from tests.support.peers import NatsServer
from tests.support.servers import RabbitMQ, RedisServer

RATES = ("queue.rate_in", "queue.rate_out")



def through_json(data: dict[str, Any] | None) -> dict[str, Any]:
    assert data is not None
    return json.loads(json.dumps(data))  # the state file's round trip


# --------------------------------------------------------------------------- NATS


async def _nats_stream(url: str, publish: int) -> Any:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="JOBS", subjects=["jobs.>"]))
    await js.add_consumer("JOBS", ConsumerConfig(durable_name="WORKERS"))
    for _ in range(publish):
        await js.publish("jobs.x", b"m")
    return nc


def _nats(url: str, clock: Callable[[], float]) -> NatsSource:
    return NatsSource(NatsSettings(kind="nats", url=url, stream="JOBS", consumer="WORKERS", timeout=2), clock=clock)


async def test_nats_rates_span_the_restart(nats_server: NatsServer) -> None:
    nc = await _nats_stream(nats_server.url, publish=10)
    js = nc.jetstream()
    before = _nats(nats_server.url, FakeClock(100.0))
    after_clock = FakeClock(5000.0)  # another process: its monotonic clock has nothing to do with the first's
    after = _nats(nats_server.url, after_clock)
    fresh = _nats(nats_server.url, FakeClock(7000.0))
    try:
        first = await before.read()
        assert not set(RATES) & first.keys()
        before._clock = FakeClock(104.0)  # type: ignore[attr-defined]  # the daemon saved its state 4 s after its last read
        saved = through_json(before.snapshot())
        await before.close()

        for _ in range(30):
            await js.publish("jobs.x", b"m")
        assert after.restore(saved, elapsed=6.0)  # 6 s of wall-clock time until the new daemon started
        got = await after.read()
        assert got["queue.rate_in"] == 30 / 10.0  # 30 messages over 4 + 6 s
        assert got["queue.rate_out"] == 0.0
        assert got["queue.backlog"] == 40.0

        control = await fresh.read()  # the same first read without the snapshot: no rates at all
        assert not set(RATES) & control.keys() and fresh.last_reset == "first reading"
    finally:
        for src in (before, after, fresh):
            await src.close()
        await nc.close()


async def test_nats_stream_recreated_while_down_gives_no_rates(nats_server: NatsServer) -> None:
    nc = await _nats_stream(nats_server.url, publish=50)
    before, after = _nats(nats_server.url, FakeClock(1.0)), _nats(nats_server.url, FakeClock(10.0))
    try:
        await before.read()
        saved = through_json(before.snapshot())
        js = nc.jetstream()
        await js.delete_stream("JOBS")
        await nc.close()
        nc = await _nats_stream(nats_server.url, publish=5)
        assert after.restore(saved, elapsed=3.0)
        got = await after.read()
        assert not set(RATES) & got.keys()  # never -45 messages per second
        assert after.last_reset == "stream re-created"
        assert got["queue.backlog"] == 5.0
    finally:
        await before.close()
        await after.close()
        await nc.close()


def test_nats_refuses_a_snapshot_it_does_not_understand() -> None:
    src = _nats("nats://127.0.0.1:9", FakeClock(1.0))
    assert src.snapshot() is None  # nothing read yet: nothing to keep
    assert src.restore({"v": 99}, 1.0) is False
    with pytest.raises((KeyError, ValueError, TypeError)):
        src.restore({"v": 1, "age_s": 1, "counters": {"last_seq": "many"}}, 1.0)
    assert src.restore({"v": 1, "age_s": float("nan"), "counters": {
        "stream_created": None, "consumer_created": None, "retention": None, **dict.fromkeys(
            ("first_seq", "last_seq", "num_pending", "num_ack_pending", "num_redelivered", "num_waiting", "delivered_stream_seq",
             "delivered_consumer_seq", "ack_floor_stream_seq", "ack_floor_consumer_seq"), 0)}}, 1.0) is False


# --------------------------------------------------------------------------- Redis streams


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer.start(tmp_path / "redis")
    try:
        yield s
    finally:
        s.stop()


def _redis(url: str, clock: Callable[[], float], **mode: str) -> RedisSource:
    return RedisSource(RedisSettings.model_validate({"kind": "redis", "url": url, "timeout": 1, **mode}), clock=clock)


async def test_redis_stream_rates_span_the_restart(redis_server: RedisServer) -> None:
    import redis

    r = redis.Redis(port=redis_server.port)
    r.xgroup_create("events", "workers", id="0", mkstream=True)
    before, after = _redis(redis_server.url, FakeClock(50.0), stream="events", group="workers"), None
    try:
        await before.read()
        saved = through_json(before.snapshot())
        for i in range(12):
            r.xadd("events", {"n": i})
        got = r.xreadgroup("workers", "c1", {"events": ">"}, count=12)
        r.xack("events", "workers", *[m[0] for m in got[0][1][:8]])  # 12 delivered, 8 done
        after = _redis(redis_server.url, FakeClock(900.0), stream="events", group="workers")
        assert after.restore(saved, elapsed=4.0)
        now = await after.read()
        assert (now["queue.rate_in"], now["queue.rate_out"]) == (3.0, 2.0)  # 12 and 8 over 4 s
        assert (now["queue.ack_pending"], now["queue.backlog"]) == (4.0, 4.0)
    finally:
        await before.close()
        if after is not None:
            await after.close()
        r.close()


async def test_redis_lists_have_no_baseline_to_keep(redis_server: RedisServer) -> None:
    src = _redis(redis_server.url, FakeClock(1.0), list="jobs")
    try:
        await src.read()
        assert src.snapshot() is None
        assert src.restore({"v": 1, "age_s": 0, "counters": {"added": 1, "read": 1, "pending": 0}}, 1.0) is False
    finally:
        await src.close()


# --------------------------------------------------------------------------- RabbitMQ


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    b = RabbitMQ.start(tmp_path_factory.mktemp("rabbit"))
    try:
        yield b
    finally:
        b.stop()


async def _settled(broker: RabbitMQ, queue: str, **expected: int) -> None:
    """Until the broker's own statistics show ``expected``: they are published every few seconds."""

    def now() -> dict[str, Any]:
        try:
            q: Any = broker.api("GET", f"queues/%2F/{queue}")
        except urllib.error.HTTPError as e:  # a queue declared a moment ago may answer 500 or 404 at first
            return {"http": e.code}
        return {k: (q.get("message_stats") or {}).get(k, 0) if k in ("publish", "ack") else q.get(k) for k in expected}

    deadline = time.monotonic() + 30
    while (seen := await asyncio.to_thread(now)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"broker statistics never showed {expected}; last {seen}")
        await asyncio.sleep(0.2)


async def test_rabbitmq_rates_span_the_restart(broker: RabbitMQ, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiormq

    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.setenv("RMQ_PASS", "guest")
    queue = "q-snapshot"
    settings = RabbitMQSettings.model_validate({"kind": "rabbitmq", "url": broker.url, "amqp_url": broker.amqp_url, "queue": queue, "timeout": 2,
                                                "username_env": "RMQ_USER", "password_env": "RMQ_PASS"})
    conn = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}/")
    channel = await conn.channel()
    await channel.queue_declare(queue, durable=True)
    for i in range(5):
        await channel.basic_publish(f"job {i}".encode(), routing_key=queue)
    await _settled(broker, queue, publish=5, messages_ready=5)
    before = RabbitMQSource(settings, clock=FakeClock(10.0))
    after = RabbitMQSource(settings, clock=FakeClock(400.0))
    try:
        await before.read()
        saved = through_json(before.snapshot())
        await before.close()
        for i in range(20):
            await channel.basic_publish(f"job {i}".encode(), routing_key=queue)
        for _ in range(5):
            m = await channel.basic_get(queue, no_ack=False)
            assert m.delivery_tag is not None
            await channel.basic_ack(m.delivery_tag)
        await _settled(broker, queue, publish=25, ack=5, messages_ready=20)
        assert after.restore(saved, elapsed=5.0)
        got = await after.read()
        assert (got["queue.rate_in"], got["queue.rate_out"]) == (4.0, 1.0)  # 20 and 5 over 5 s
        assert got["queue.backlog"] == 20.0
    finally:
        await before.close()
        await after.close()
        await conn.close()
