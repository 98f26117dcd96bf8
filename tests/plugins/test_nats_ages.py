"""``queue.oldest_age`` from a real nats-server: the stream's time of the consumer's next message
agrees with the producer's own publish times, follows the consumer as it takes messages, minds a
filtered consumer's subjects, and is absent (with the reason) when nothing waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

from docktor.tools.sdk import admit
from docktor.tools.sources.nats import AGE_RETRY_S, NatsSettings, NatsSource
from tests.support.clocks import FakeClock
from tests.support.peers import NatsServer, start_nats
from tests.support.publish_times import Published, age_read, sent
from tests.support.readings import opened

STREAM = "ORDERS"
#: between two publishes: more than the 1 s agreement asked for, so "moved to the next message"
#: cannot be mistaken for the same message read a little later
GAP = 2.5


async def publish(js: JetStreamContext, subject: str) -> Published:
    return await sent(lambda: js.publish(subject, b"order"))


async def read_age(source: NatsSource, oldest: Published) -> float:
    return await age_read(source.read, oldest)


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


async def consumer(js: JetStreamContext, name: str, **config: object) -> None:
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, ack_wait=60, **config))


async def take_oldest(js: JetStreamContext, name: str) -> None:
    """A worker of consumer ``name`` takes its next message and acknowledges it."""
    sub = await js.pull_subscribe_bind(name, stream=STREAM)
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.ack_sync()
    await sub.unsubscribe()


@pytest.mark.parametrize("retention", [RetentionPolicy.LIMITS, RetentionPolicy.WORK_QUEUE])
async def test_the_oldest_age_is_the_next_messages_wait_and_moves_as_workers_take_them(
    nats_server: NatsServer, js: JetStreamContext, retention: RetentionPolicy
) -> None:
    # under work-queue retention an ack deletes the message: the next one is found all the same
    await js.add_stream(name=STREAM, subjects=["orders.>"], retention=retention)
    await consumer(js, "WORKERS")
    async with opened(NatsSource) as make:
        source = make(NatsSettings(kind="nats", url=nats_server.url, stream=STREAM, consumer="WORKERS"))
        got = await source.read()  # nothing waits: 0, so a rule on the age lets an empty queue scale in
        assert got["queue.oldest_age"] == 0.0 and source.why_absent == {}

        first = await publish(js, "orders.new")
        await asyncio.sleep(GAP)
        second = await publish(js, "orders.new")
        await asyncio.sleep(GAP)
        assert await read_age(source, first) >= 2 * GAP - 1.0

        await take_oldest(js, "WORKERS")  # the age moves to the next message
        await read_age(source, second)  # within 1 s of its own age: GAP from the first's

        await take_oldest(js, "WORKERS")  # nothing waits any more: 0
        got = await source.read()
        assert got["queue.pending"] == 0.0 and got["queue.oldest_age"] == 0.0
        assert source.why_absent == {}


async def test_a_filtered_consumer_is_aged_by_its_own_subjects_only(nats_server: NatsServer, js: JetStreamContext) -> None:
    await js.add_stream(name=STREAM, subjects=["orders.>"])
    await consumer(js, "EU", filter_subject="orders.eu")
    await consumer(js, "EU_US", filter_subjects=["orders.eu", "orders.us"])
    await publish(js, "orders.asia")  # older, but neither consumer will ever hand it out
    await asyncio.sleep(GAP)
    us = await publish(js, "orders.us")
    await asyncio.sleep(GAP)
    eu = await publish(js, "orders.eu")
    await asyncio.sleep(GAP)
    async with opened(NatsSource) as make:
        only_eu = make(NatsSettings(kind="nats", url=nats_server.url, stream=STREAM, consumer="EU"))
        both = make(NatsSettings(kind="nats", url=nats_server.url, stream=STREAM, consumer="EU_US"))
        await read_age(only_eu, eu)  # not orders.asia's, nor orders.us's (each GAP older)
        await read_age(both, us)  # the earlier of its two subjects' next messages

        await take_oldest(js, "EU_US")  # took orders.us: orders.eu is next
        await read_age(both, eu)
        await take_oldest(js, "EU")
        got = await only_eu.read()
        assert got["queue.oldest_age"] == 0.0 and only_eu.why_absent == {}


NO_MSG_GET = """
authorization {
  users = [
    {user: admin, password: admin-pw}
    # the daemon's user may read the stream's and the consumer's info, not the messages
    {user: docktor, password: docktor-pw, permissions: {
      publish: {allow: ["$JS.API.STREAM.INFO.>", "$JS.API.CONSUMER.INFO.>"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
  ]
}
"""


async def test_a_user_not_allowed_to_read_messages_has_the_counts_and_the_age_missing_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(NO_MSG_GET)
    server = start_nats(tmp_path / "js", "-c", str(conf))
    try:
        nc = await nats.connect(server.url, user="admin", password="admin-pw")
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=["orders.>"])
        await consumer(js, "WORKERS")
        await publish(js, "orders.new")
        await nc.close()
        monkeypatch.setenv("Q_USER", "docktor")
        monkeypatch.setenv("Q_PASS", "docktor-pw")
        clock = FakeClock()
        async with opened(NatsSource) as make:
            source = make(NatsSettings(kind="nats", url=server.url, stream=STREAM, consumer="WORKERS", timeout=0.5,
                                       user_env="Q_USER", password_env="Q_PASS"), clock)
            got = await source.read()
            # not asked again at every tick (each would wait the timeout out): after AGE_RETRY_S
            sent = source._nc.stats["out_msgs"]
            again = await source.read()
            skipped = source._nc.stats["out_msgs"] - sent
            clock.advance(AGE_RETRY_S)
            sent = source._nc.stats["out_msgs"]
            await source.read()
            asked = source._nc.stats["out_msgs"] - sent
        assert asked == skipped + 1  # the one STREAM.MSG.GET (one subject filter)
        assert admit(again, NatsSource.provides) == admit(got, NatsSource.provides)  # Missing is a NaN: compare the reasons
        assert got["queue.pending"] == 1.0  # the counts stand
        kept, refused = admit(got, NatsSource.provides)  # what the daemon does with the reading
        assert "queue.oldest_age" not in kept and kept["queue.backlog"] == 1.0
        # the server drops a request its permissions refuse, and says why on the connection only
        why = refused.pop("queue.oldest_age")
        assert refused == {} and why.startswith("no answer to STREAM.MSG.GET within 0.5s (nats: permissions violation ")
        assert why.lower().endswith(f'"$js.api.stream.msg.get.orders"); asked again every {AGE_RETRY_S:.0f} s')
    finally:
        server.stop()
