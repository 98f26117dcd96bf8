"""What the NATS source's test modules share (tests/plugins/test_nats_source_figures.py and
test_nats_source_faults.py): the stream and its durable consumer, a client fixture, the source's
settings, a fake clock and a source factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

from docktor.tools.sources.nats import NatsSettings as Settings
from docktor.tools.sources.nats import NatsSource
from tests.support.clocks import FakeClock
from tests.support.peers import NatsServer
from tests.support.readings import opened, settling

__all__ = ["clock", "js", "make_source"]  # the fixtures: a test module takes them with `import *`


STREAM, CONSUMER, SUBJECT = "ORDERS", "WORKERS", "orders.new"


def settings(url: str, **extra: Any) -> Settings:
    # The default 2 s: a read is three requests now (the age's message get too), and a loaded
    # machine took over 0.5 s; the tests that wait for a timeout on purpose set a short one.
    return Settings.model_validate({"kind": "nats", "url": url, "stream": STREAM, "consumer": CONSUMER, "timeout": 2, **extra})


async def setup_queue(js: JetStreamContext, retention: RetentionPolicy = RetentionPolicy.LIMITS) -> None:
    await js.add_stream(name=STREAM, subjects=["orders.>"], retention=retention)
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30))


async def publish(js: JetStreamContext, n: int) -> None:
    for i in range(n):
        await js.publish(SUBJECT, f"order {i}".encode())


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A test client with the stream and durable pull consumer in place."""
    nc = await nats.connect(nats_server.url)
    ctx = nc.jetstream()
    await setup_queue(ctx)
    yield ctx
    # Some tests stop the server first; a client closing against a dead server is not their subject.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await nc.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_source() -> AsyncIterator[Callable[..., NatsSource]]:
    async with opened(NatsSource) as make:
        yield make


read_settled = settling(within=10, every=0.1)
