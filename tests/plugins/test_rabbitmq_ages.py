"""``queue.oldest_age`` from a real RabbitMQ broker: the head message's ``timestamp`` property
(``head_message_timestamp``) agrees with the producer's own publish times and follows the head
as a worker takes messages; absent, with the reason, for a message published without one (pika's
default, and Celery's own producer), an empty queue and a quorum queue; a timestamp in
milliseconds is missing with the reason, never an age."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiormq
import pytest
from celery import Celery

from docktor.tools.sdk import admit
from docktor.tools.sources.rabbitmq import MANAGEMENT_METRICS, RabbitMQSource
from docktor.tools.sources.rabbitmq import RabbitMQSettings as Settings
from docktor.tools.sources.rabbitmq_head import NO_TIMESTAMP, NOT_REPORTED
from tests.support.publish_times import AGREEMENT, Published, age_read
from tests.support.readings import opened, settling
from tests.support.servers import RabbitMQ

#: between two publishes: more than the 1 s agreement plus the timestamp's whole-second resolution
GAP = 3.0
read_settled = settling(within=30, every=0.2)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    b = RabbitMQ.start(tmp_path_factory.mktemp("rabbit-ages"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def channel(broker: RabbitMQ) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    conn = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}/")
    try:
        yield await conn.channel()
    finally:
        await conn.close()


@pytest.fixture
async def source(broker: RabbitMQ, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RabbitMQSource]:
    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.setenv("RMQ_PASS", "guest")
    queue = f"ages-{request.node.name[:50]}"
    async with opened(RabbitMQSource) as make:
        yield make(Settings.model_validate({
            "kind": "rabbitmq", "url": broker.url, "queue": queue, "timeout": 2,
            "username_env": "RMQ_USER", "password_env": "RMQ_PASS", "statistics_interval": "1s",
            "amqp_url": broker.amqp_url,  # the exact ready count over AMQP, as by default in production
        }))


async def publish(channel: aiormq.abc.AbstractChannel, queue: str, *, stamped: bool = True) -> Published:
    """One persistent message, with the producer's clock in its ``timestamp`` property (whole
    seconds, as AMQP keeps it) the way pika's ``BasicProperties(timestamp=int(time.time()))`` sets
    it; without, as pika and Celery publish by default."""
    now = int(time.time())
    properties = aiormq.spec.Basic.Properties(delivery_mode=2, timestamp=dt.datetime.fromtimestamp(now, dt.UTC) if stamped else None)
    await channel.basic_publish(b"job", routing_key=queue, properties=properties)
    return Published(now, now)  # the time the broker reports is the producer's own


async def ready(source: RabbitMQSource, n: int) -> dict[str, float]:
    """The reading once ``n`` messages are ready (exact at once: a passive declare over AMQP)."""
    return await read_settled(source.read, lambda m: m.get("queue.pending") == n)


async def head_is(source: RabbitMQSource, oldest: Published) -> None:
    """Until the broker's statistics show ``oldest`` at the head: they move once a second here, and
    the head's timestamp may come a period after the ready count (the lag docs/sources.md states)."""
    def shown(m: dict[str, float]) -> bool:
        age = m.get("queue.oldest_age")
        return age is not None and abs(age - (time.time() - oldest.sent)) <= AGREEMENT
    await read_settled(source.read, shown)


async def in_statistics(broker: RabbitMQ, source: RabbitMQSource, ready: int) -> dict[str, float]:
    """A reading taken once the management API's statistics (where the head comes from) show ``ready`` ready."""
    path = f"queues/%2F/{source.settings.queue}"
    await read_settled(lambda: _ready_in(broker, path), lambda m: m.get("ready") == ready)
    return await source.read()


async def _ready_in(broker: RabbitMQ, path: str) -> dict[str, float]:
    q: Any = await asyncio.to_thread(broker.api, "GET", path)
    return {"ready": float(q["messages_ready"])} if isinstance(q.get("messages_ready"), int) else {}


async def test_the_head_messages_timestamp_gives_the_oldest_age_and_follows_the_head(
    source: RabbitMQSource, channel: aiormq.abc.AbstractChannel
) -> None:
    queue = source.settings.queue
    await channel.queue_declare(queue, durable=True)
    first = await publish(channel, queue)
    await asyncio.sleep(GAP)
    second = await publish(channel, queue)
    await head_is(source, first)
    assert await age_read(source.read, first) >= GAP

    got = await channel.basic_get(queue, no_ack=True)  # a worker takes the head
    assert got.delivery_tag is not None
    await head_is(source, second)  # the statistics' head moves within a period
    await age_read(source.read, second)  # within 1 s of the second's age: at least GAP from the first's

    await channel.basic_get(queue, no_ack=True)
    # empty at once by the exact count, whatever head the statistics still show: nothing waits, 0
    got_now = await ready(source, 0)
    assert got_now["queue.oldest_age"] == 0.0 and source.why_absent == {}


async def test_no_timestamp_property_no_age(broker: RabbitMQ, source: RabbitMQSource, channel: aiormq.abc.AbstractChannel) -> None:
    queue = source.settings.queue
    await channel.queue_declare(queue, durable=True)
    await publish(channel, queue, stamped=False)  # pika's BasicProperties() and Celery set none
    await publish(channel, queue)  # a stamped one behind it does not stand in for the head
    got = await in_statistics(broker, source, 2)
    assert "queue.oldest_age" not in got and source.why_absent == {"queue.oldest_age": NO_TIMESTAMP}


async def test_a_celery_producer_sets_no_timestamp_property(broker: RabbitMQ, source: RabbitMQSource) -> None:
    # what docs/sources.md says of Celery on RabbitMQ, with Celery's own producer (kombu over py-amqp)
    app = Celery("docktor_ages", broker=f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}//")
    try:
        await asyncio.to_thread(app.send_task, "work", args=[1], queue=source.settings.queue)
    finally:
        app.close()
    got = await in_statistics(broker, source, 1)
    assert "queue.oldest_age" not in got and source.why_absent == {"queue.oldest_age": NO_TIMESTAMP}


async def test_a_quorum_queue_reports_no_head_timestamp(
    broker: RabbitMQ, source: RabbitMQSource, channel: aiormq.abc.AbstractChannel
) -> None:
    queue = source.settings.queue
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    await publish(channel, queue)
    got = await in_statistics(broker, source, 1)
    assert "queue.oldest_age" not in got and source.why_absent == {"queue.oldest_age": NOT_REPORTED}


async def test_a_timestamp_in_milliseconds_is_missing_with_the_reason(
    broker: RabbitMQ, source: RabbitMQSource, channel: aiormq.abc.AbstractChannel
) -> None:
    # a producer that writes milliseconds (JavaScript's Date.now()): the management API's own
    # publish takes the number as it is, where an AMQP client library would refuse the date
    queue = source.settings.queue
    await channel.queue_declare(queue, durable=True)
    body: dict[str, Any] = {"routing_key": queue, "payload": "job", "payload_encoding": "string",
                            "properties": {"delivery_mode": 2, "timestamp": int(time.time() * 1000)}}
    assert broker.api("POST", "exchanges/%2F/amq.default/publish", json.dumps(body).encode()) == {"routed": True}
    got = await read_settled(source.read, lambda m: "queue.oldest_age" in m)  # once the statistics show the head
    kept, refused = admit(got, MANAGEMENT_METRICS)  # what the daemon does with every reading
    assert "queue.oldest_age" not in kept and kept["queue.pending"] == 1.0
    assert refused["queue.oldest_age"].startswith("the head message's timestamp property (the year ")
    assert refused["queue.oldest_age"].endswith(" years ahead of this clock (milliseconds read as seconds?)")
