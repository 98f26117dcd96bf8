"""The RabbitMQ source's exact ready count: with the management API, the ready and consumer counts
come from a passive ``queue.declare`` over AMQP (no statistics lag), the in-flight count and the
rates from the management API. Against a real broker whose statistics move every 10 s (production
brokers move every 5 s), so the management API's figures visibly lag behind a purge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiormq
import pytest

from docktor.tools.sources.rabbitmq import RabbitMQSettings as Settings
from docktor.tools.sources.rabbitmq import RabbitMQSource
from docktor.tools.testing.standins import closed_port
from tests.support.readings import opened
from tests.support.servers import RabbitMQ
from tests.support.waiting import read_until

STATISTICS_MS = 10_000


@pytest.fixture(scope="module")
def slow_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    b = RabbitMQ.start(tmp_path_factory.mktemp("rabbit-slow"), statistics_ms=STATISTICS_MS)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def make_source() -> AsyncIterator[Callable[..., RabbitMQSource]]:
    async with opened(RabbitMQSource) as make:
        yield make


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.setenv("RMQ_PASS", "guest")
    return {"username_env": "RMQ_USER", "password_env": "RMQ_PASS"}


def settings(**extra: Any) -> Settings:
    return Settings.model_validate({"kind": "rabbitmq", "queue": "jobs", "timeout": 2, **extra})


async def _ready_in_the_management_api(broker: RabbitMQ, queue: str, ready: int) -> None:
    """Until the management API's statistics show ``ready`` messages ready (at most three periods)."""
    async def shown() -> Any:
        q: Any = await asyncio.to_thread(broker.api, "GET", f"queues/%2F/{queue}")
        return q.get("messages_ready")

    await read_until(shown, lambda n: n == ready, 3 * STATISTICS_MS / 1000, every=0.2)


def test_the_amqp_listener_defaults_to_the_management_host() -> None:
    assert settings().exact_url == "amqp://127.0.0.1:5672"
    assert settings(url="https://rabbit.internal:15671").exact_url == "amqps://rabbit.internal:5671"
    assert settings(url="http://[::1]:15672").exact_url == "amqp://[::1]:5672"
    assert settings(amqp_url="amqp://10.0.0.7:5673").exact_url == "amqp://10.0.0.7:5673"
    assert settings(ready_over_amqp=False).exact_url is None
    assert settings(url="amqp://10.0.0.7").exact_url is None  # the AMQP-only mode asks AMQP anyway
    with pytest.raises(ValueError, match="AMQP URL"):
        settings(amqp_url="http://10.0.0.7:5672")


async def test_after_a_purge_the_first_read_says_zero(slow_broker: RabbitMQ, guest: Any, make_source: Any) -> None:
    conn = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{slow_broker.amqp_port}/")
    try:
        channel = await conn.channel()
        await channel.queue_declare("purged", durable=True)
        for i in range(300):
            await channel.basic_publish(f"job {i}".encode(), routing_key="purged")
        taken = await channel.basic_get("purged", no_ack=False)  # one in flight, held
        await _ready_in_the_management_api(slow_broker, "purged", 299)
        src = make_source(settings(url=slow_broker.url, amqp_url=slow_broker.amqp_url, queue="purged", **guest))
        before = await src.read()
        assert (before["queue.pending"], before["queue.ack_pending"], before["queue.backlog"]) == (299.0, 1.0, 300.0)

        await channel.queue_purge("purged")
        # the first read after the purge: nothing ready (the management API still says 299 until
        # its next statistics sample, up to 10 s later here, 5 s on a default broker)
        after = await src.read()
        assert (after["queue.pending"], after["queue.backlog"]) == (0.0, 1.0), after
        assert after["queue.ack_pending"] == 1.0  # in flight: the management API's figure
        assert taken.delivery_tag is not None
        await channel.basic_ack(taken.delivery_tag)
    finally:
        await conn.close()


async def test_an_unreachable_amqp_port_falls_back_to_the_management_counts(
    slow_broker: RabbitMQ, guest: Any, make_source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{slow_broker.amqp_port}/")
    try:
        channel = await conn.channel()
        await channel.queue_declare("fallback", durable=True)
        for i in range(5):
            await channel.basic_publish(f"job {i}".encode(), routing_key="fallback")
    finally:
        await conn.close()
    await _ready_in_the_management_api(slow_broker, "fallback", 5)
    port = closed_port()
    src = make_source(settings(url=slow_broker.url, amqp_url=f"amqp://127.0.0.1:{port}", queue="fallback", **guest))
    with caplog.at_level(logging.WARNING, logger="docktor.rabbitmq"):
        first, second = await src.read(), await src.read()
    assert first["queue.pending"] == second["queue.pending"] == 5.0  # the management API's counts
    assert first["queue.backlog"] == 5.0
    said = [r.getMessage() for r in caplog.records if "ready count from the management API" in r.getMessage()]
    assert len(said) == 1 and f"127.0.0.1:{port}" in said[0], said  # once, naming the listener
    assert src.amqp_problem is not None

