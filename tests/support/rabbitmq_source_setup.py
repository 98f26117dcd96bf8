"""What the RabbitMQ source's test modules share (tests/plugins/test_rabbitmq_source_figures.py and
test_rabbitmq_source_connections.py): a broker per module, a queue per test, the guest login, the
source's settings and factory, the test's own AMQP client, and waits on the broker's statistics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import aiormq
import pytest
from aiormq.abc import DeliveredMessage

from docktor.tools.sources.rabbitmq import RabbitMQSettings as Settings
from docktor.tools.sources.rabbitmq import RabbitMQSource
from tests.support.readings import opened, settling
from tests.support.servers import RabbitMQ

__all__ = ["amqp", "broker", "guest", "make_source", "queue"]  # the fixtures: a test module takes them with `import *`


RATES = ("queue.rate_in", "queue.rate_out")


CANARY = "canary-pw-5f1e"  # a password that must never show up in an error


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """One broker for the module (it takes seconds to start); each test uses its own queue."""
    b = RabbitMQ.start(tmp_path_factory.mktemp("rabbit"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    return f"q-{request.node.name[:60]}"


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.setenv("RMQ_PASS", "guest")
    return {"username_env": "RMQ_USER", "password_env": "RMQ_PASS"}


def settings(url: str, queue: str, **extra: Any) -> Settings:
    # 5 s: a real broker's management API can take over a second on a loaded 2-core machine; the
    # failures these tests provoke are refusals and answers, none waits for the timeout
    return Settings.model_validate({"kind": "rabbitmq", "url": url, "queue": queue, "timeout": 5, **extra})


@pytest.fixture
async def make_source() -> AsyncIterator[Callable[..., RabbitMQSource]]:
    async with opened(RabbitMQSource) as make:
        yield make


class Amqp:
    """The test's own AMQP client (aiormq): declare, publish, get with and without ack."""

    def __init__(self, conn: aiormq.abc.AbstractConnection, channel: aiormq.abc.AbstractChannel) -> None:
        self.conn, self.channel = conn, channel

    @classmethod
    async def open(cls, broker: RabbitMQ, vhost: str = "/") -> Amqp:
        path = "" if vhost == "/" else quote(vhost, safe="")
        conn = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}/{path}")
        return cls(conn, await conn.channel())

    async def declare(self, queue: str) -> None:
        await self.channel.queue_declare(queue, durable=True)

    async def publish(self, queue: str, n: int) -> None:
        for i in range(n):
            await self.channel.basic_publish(
                f"job {i}".encode(), routing_key=queue, properties=aiormq.spec.Basic.Properties(delivery_mode=2)
            )

    async def get(self, queue: str, n: int, *, ack: bool) -> list[DeliveredMessage]:
        got = []
        for _ in range(n):
            m = await self.channel.basic_get(queue, no_ack=False)
            assert m.delivery_tag is not None, "queue ran dry"
            if ack:
                await self.channel.basic_ack(m.delivery_tag)
            got.append(m)
        return got

    async def close(self) -> None:
        await self.conn.close()


@pytest.fixture
async def amqp(broker: RabbitMQ) -> AsyncIterator[Amqp]:
    client = await Amqp.open(broker)
    try:
        yield client
    finally:
        await client.close()


read_settled = settling(within=20, every=0.2)


async def settled(broker: RabbitMQ, queue: str, vhost: str = "/", **expected: int) -> None:
    """Until the broker's own statistics show ``expected`` (e.g. publish=10, messages_ready=3):
    the test's independent view of what the source must then report."""
    path = f"queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"

    def now() -> dict[str, Any]:
        q: Any = broker.api("GET", path)
        return {k: (q.get("message_stats") or {}).get(k, 0) if k in ("publish", "ack", "deliver_get") else q.get(k) for k in expected}

    deadline = time.monotonic() + 20
    while (seen := await asyncio.to_thread(now)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"broker statistics never showed {expected}; last {seen}")
        await asyncio.sleep(0.2)
