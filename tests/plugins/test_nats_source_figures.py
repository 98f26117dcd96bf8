"""The NATS JetStream source against a real nats-server: exact figures (pending, in flight, backlog,
lag, redelivered, waiting pull requests) and rates with a fake clock, across purges, work-queue
retention, re-created and missing streams and consumers."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy

from docktor.tools.sdk import SourceError
from tests.support.clocks import FakeClock
from tests.support.nats_source_setup import *  # noqa: F403  (fixtures, found by name: clock, js, make_source)
from tests.support.nats_source_setup import CONSUMER, STREAM, publish, read_settled, settings, setup_queue
from tests.support.peers import NatsServer

RATES = ("queue.rate_in", "queue.rate_out")


# --------------------------------------------------------------------------- figures


async def test_counts_pending_in_flight_backlog_and_lag(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    await publish(js, 10)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    for m in await sub.fetch(3, timeout=2):
        await m.ack_sync()
    held = await sub.fetch(4, timeout=2)
    assert len(held) == 4

    src = make_source(settings(nats_server.url))
    metrics = await src.read()
    assert metrics.pop("queue.oldest_age") >= 0  # message 8's wait: its figures in test_nats_ages.py
    assert metrics == {
        "queue.pending": 3.0,  # 10 published - 7 delivered
        "queue.ack_pending": 4.0,  # delivered, not acked
        "queue.backlog": 7.0,
        "queue.redelivered": 0.0,
        "queue.waiting": 0.0,
        "queue.lag": 3.0,  # last_seq 10 - delivered stream seq 7
    }
    assert src.last_via == "api" and src.last_reset == "first reading"


async def test_nak_and_refetch_counts_redelivered(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    # One message only: a nak is fire-and-forget, so the re-fetch must not be able to get another.
    await publish(js, 1)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    first = (await sub.fetch(1, timeout=2))[0]
    await first.nak()
    again = (await sub.fetch(1, timeout=5))[0]
    assert again.data == first.data and again.metadata.num_delivered == 2
    await publish(js, 2)

    metrics = await make_source(settings(nats_server.url)).read()
    assert metrics["queue.redelivered"] == 1.0
    assert metrics["queue.ack_pending"] == 1.0
    assert metrics["queue.pending"] == 2.0


async def test_outstanding_pull_request_counts_waiting(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    src = make_source(settings(nats_server.url))
    assert (await src.read())["queue.waiting"] == 0.0
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    # An idle worker: a pull request parked on the server until a message arrives.
    worker = asyncio.create_task(sub.fetch(1, timeout=10))
    try:
        metrics = await read_settled(src.read, lambda m: m["queue.waiting"] >= 1)
        assert metrics["queue.backlog"] == 0.0
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


# --------------------------------------------------------------------------- rates


async def test_rates_are_exact_with_a_fake_clock(nats_server: NatsServer, js: JetStreamContext, clock: FakeClock, make_source: Any) -> None:
    src = make_source(settings(nats_server.url), clock)
    first = await src.read()
    assert not set(RATES) & first.keys()  # absent, not zero

    await publish(js, 6)
    clock.advance(2.0)
    second = await src.read()
    assert second["queue.rate_in"] == 3.0
    assert second["queue.rate_out"] == 0.0

    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    for m in await sub.fetch(4, timeout=2):
        await m.ack_sync()
    clock.advance(2.0)
    third = await src.read()
    assert third["queue.rate_out"] == 2.0
    assert third["queue.rate_in"] == 0.0
    assert third["queue.backlog"] == 2.0


async def test_no_elapsed_time_keeps_the_older_baseline(nats_server: NatsServer, js: JetStreamContext, clock: FakeClock, make_source: Any) -> None:
    src = make_source(settings(nats_server.url), clock)
    await src.read()
    await publish(js, 4)
    same_instant = await src.read()
    assert not set(RATES) & same_instant.keys()
    clock.advance(4.0)
    assert (await src.read())["queue.rate_in"] == 1.0  # 4 messages over the 4 s since the first read


async def test_purge_of_undelivered_messages_omits_rates_then_resumes(
    nats_server: NatsServer, js: JetStreamContext, clock: FakeClock, make_source: Any
) -> None:
    src = make_source(settings(nats_server.url), clock)
    await publish(js, 10)
    assert (await src.read())["queue.backlog"] == 10.0

    await js.purge_stream(STREAM)
    clock.advance(2.0)
    after = await src.read()
    assert not set(RATES) & after.keys()  # the consumer's ack floor jumped by 10 without any ack
    assert after["queue.backlog"] == 0.0 and after["queue.lag"] == 0.0
    assert src.last_reset is not None and "purge" in src.last_reset

    await publish(js, 4)
    clock.advance(2.0)
    resumed = await src.read()
    assert resumed["queue.rate_in"] == 2.0 and resumed["queue.rate_out"] == 0.0


async def test_purge_with_messages_in_flight_omits_rates(
    nats_server: NatsServer, js: JetStreamContext, clock: FakeClock, make_source: Any
) -> None:
    await publish(js, 5)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    assert len(await sub.fetch(5, timeout=2)) == 5  # all delivered, none acked
    src = make_source(settings(nats_server.url), clock)
    assert (await src.read())["queue.ack_pending"] == 5.0

    await js.purge_stream(STREAM)
    clock.advance(2.0)
    after = await src.read()
    # The purge dragged the ack floor over 5 messages nobody acknowledged: not throughput.
    assert not set(RATES) & after.keys()
    assert after["queue.ack_pending"] == 0.0


async def test_workqueue_acks_still_count_as_rate_out(nats_server: NatsServer, clock: FakeClock, make_source: Any) -> None:
    # Under work-queue retention an ack deletes the message; that must not look like a purge.
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await setup_queue(js, RetentionPolicy.WORK_QUEUE)
        await publish(js, 8)
        src = make_source(settings(nats_server.url), clock)
        await src.read()
        sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
        for m in await sub.fetch(8, timeout=2):
            await m.ack_sync()
        clock.advance(2.0)
        metrics = await src.read()
        assert metrics["queue.rate_out"] == 4.0
        assert metrics["queue.backlog"] == 0.0
    finally:
        await nc.close()


async def test_recreated_stream_omits_rates_and_missing_stream_is_named(
    nats_server: NatsServer, js: JetStreamContext, clock: FakeClock, make_source: Any
) -> None:
    src = make_source(settings(nats_server.url), clock)
    await publish(js, 10)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    for m in await sub.fetch(5, timeout=2):
        await m.ack_sync()
    await src.read()

    await js.delete_stream(STREAM)
    with pytest.raises(SourceError, match=f"stream '{STREAM}' not found"):
        await src.read()

    # More messages than before, so only the new creation time can tell it is a new stream.
    await setup_queue(js)
    await publish(js, 12)
    clock.advance(2.0)
    after = await src.read()
    assert not set(RATES) & after.keys()
    assert after["queue.pending"] == 12.0
    assert src.last_reset == "stream re-created"

    await publish(js, 2)
    clock.advance(2.0)
    assert (await src.read())["queue.rate_in"] == 1.0


async def test_missing_consumer_is_named(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    src = make_source(settings(nats_server.url, consumer="NOBODY"))
    with pytest.raises(SourceError, match=rf"consumer 'NOBODY' not found on stream '{STREAM}' \(consumers: {CONSUMER}\)"):
        await src.read()


async def test_missing_stream_names_the_streams_there_are(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    src = make_source(settings(nats_server.url, stream=STREAM[:-1]))
    with pytest.raises(SourceError, match=rf"stream '{STREAM[:-1]}' not found \(streams: {STREAM}\)"):
        await src.read()
