"""The RabbitMQ source's connections to a real broker (Debian's rabbitmq-server, management plugin
on): credentials, nothing listening, a broker restart, the AMQP-only mode and its one connection,
and both over TLS with a private CA.

Settings, figures and rates: test_rabbitmq_source_figures.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from docktor.tools.sdk import SourceError
from tests.support.clocks import FakeClock
from tests.support.peers import free_port
from tests.support.rabbitmq_source_setup import *  # noqa: F403  (fixtures, found by name: amqp, broker, guest, make_source, queue)
from tests.support.rabbitmq_source_setup import CANARY, RATES, Amqp, read_settled, settings, settled
from tests.support.servers import Certificates, RabbitMQ, make_certificates
from tests.support.waiting import read_until

# --------------------------------------------------------------------------- credentials and faults


async def test_rejected_password_is_a_clear_error_without_the_secret(
    broker: RabbitMQ, amqp: Amqp, queue: str, make_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await amqp.declare(queue)
    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.setenv("RMQ_PASS", CANARY)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, username_env="RMQ_USER", password_env="RMQ_PASS"))
    with pytest.raises(SourceError, match="refused the user in RMQ_USER: HTTP 401") as info:
        await src.read()
    assert CANARY not in str(info.value)


async def test_unset_password_variable_is_named(broker: RabbitMQ, queue: str, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.delenv("RMQ_NO_PASS", raising=False)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, username_env="RMQ_USER", password_env="RMQ_NO_PASS"))
    with pytest.raises(SourceError, match=r"environment variable RMQ_NO_PASS \(password_env\) is not set"):
        await src.read()


async def test_nothing_listening_raises_source_error(make_source: Any) -> None:
    src = make_source(settings(f"http://127.0.0.1:{free_port()}", "jobs"))
    with pytest.raises(SourceError, match="cannot reach the management API at http://127.0.0.1"):
        await src.read()


async def test_broker_restart_reads_missing_then_exact_again(tmp_path: Path, guest: Any, make_source: Any) -> None:
    b = RabbitMQ.start(tmp_path / "rabbit")
    try:
        client = await Amqp.open(b)
        await client.declare("durable-jobs")
        await client.publish("durable-jobs", 7)
        await client.get("durable-jobs", 2, ack=True)
        await client.close()
        clock = FakeClock()
        src = make_source(settings(b.url, "durable-jobs", amqp_url=b.amqp_url, **guest), clock)
        before = await read_settled(src.read, lambda m: m.get("queue.backlog") == 5.0)

        b.stop()
        with pytest.raises(SourceError):
            await src.read()

        b.launch()  # same folder, same ports: the durable queue and its persistent messages come back
        clock.advance(10.0)
        after = await read_settled(src.read, lambda m: m.get("queue.backlog") == 5.0, within=60)
        assert after["queue.pending"] == before["queue.pending"] == 5.0
        # the broker's counters restarted from zero: no rate, and certainly no negative one
        assert all(after.get(r, 0.0) >= 0.0 for r in RATES)
        client = await Amqp.open(b)
        await client.publish("durable-jobs", 4)
        await client.close()
        await settled(b, "durable-jobs", messages_ready=9)
        clock.advance(2.0)
        resumed = await read_settled(src.read, lambda m: "queue.rate_in" in m)
        assert resumed["queue.rate_in"] >= 0.0 and resumed["queue.backlog"] == 9.0
    finally:
        b.stop()


# --------------------------------------------------------------------------- AMQP-only mode


async def test_amqp_mode_reads_ready_count_and_consumers(broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any) -> None:
    await amqp.declare(queue)
    await amqp.publish(queue, 8)
    await amqp.get(queue, 3, ack=False)  # in flight: invisible to a passive declare
    src = make_source(settings(broker.amqp_url, queue, **guest))
    # AMQP answers from the queue itself: exact at once, no statistics lag
    assert await src.read() == {"queue.pending": 5.0, "queue.consumers": 0.0}


async def test_amqp_reads_keep_one_connection_and_open_another_when_the_broker_closes_it(
    broker: RabbitMQ, amqp: Amqp, queue: str, make_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broker logs every connection it accepts and closes: one per tick would fill its log. A user
    # of its own, so that the broker's list of connections tells the source's apart from the test's.
    broker.api("PUT", "users/tally", b'{"password":"tally-pw","tags":""}')
    broker.api("PUT", "permissions/%2F/tally", b'{"configure":".*","write":".*","read":".*"}')
    monkeypatch.setenv("TALLY_USER", "tally")
    monkeypatch.setenv("TALLY_PASS", "tally-pw")
    await amqp.declare(queue)
    await amqp.publish(queue, 3)
    src = make_source(settings(broker.amqp_url, queue, username_env="TALLY_USER", password_env="TALLY_PASS"))

    async def tally() -> list[str]:  # the names of the broker's connections of that user (listed within a second)
        listed: Any = await asyncio.to_thread(broker.api, "GET", "connections")
        return [c["name"] for c in listed if c.get("user") == "tally"]

    async def settled(n: int) -> list[str]:  # n listed, and still n a statistics period later
        names = await read_until(tally, lambda names: len(names) == n, 20, every=0.5)
        await asyncio.sleep(1.5)
        assert await tally() == names
        return names

    for _ in range(5):
        assert await src.read() == {"queue.pending": 3.0, "queue.consumers": 0.0}
    (first,) = await settled(1)  # one connection, kept between the reads

    broker.api("DELETE", f"connections/{quote(first, safe='')}")  # as an operator or a broker restart would
    await settled(0)
    assert await src.read() == {"queue.pending": 3.0, "queue.consumers": 0.0}  # a fresh one, within the same read
    (second,) = await settled(1)
    assert second != first

    await src.close()
    await settled(0)


async def test_amqp_mode_missing_queue_and_bad_password(
    broker: RabbitMQ, make_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMQ_USER", "guest")
    monkeypatch.setenv("RMQ_PASS", "guest")
    creds = {"username_env": "RMQ_USER", "password_env": "RMQ_PASS"}
    with pytest.raises(SourceError, match="queue 'nowhere' not found in vhost '/'"):
        await make_source(settings(broker.amqp_url, "nowhere", **creds)).read()
    monkeypatch.setenv("RMQ_PASS", CANARY)
    with pytest.raises(SourceError, match="refused the credentials") as info:
        await make_source(settings(broker.amqp_url, "nowhere", **creds)).read()
    assert CANARY not in str(info.value)


# --------------------------------------------------------------------------- TLS: HTTPS and AMQPS


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RabbitMQ, Certificates]]:
    """A broker serving the management API over HTTPS and AMQPS too, with a private CA's certificate."""
    certs = make_certificates(tmp_path_factory.mktemp("rabbit-ca"))
    b = RabbitMQ.start(tmp_path_factory.mktemp("rabbit-tls"), tls=certs)
    try:
        yield b, certs
    finally:
        b.stop()


async def test_https_and_amqps_with_a_private_ca(tls_broker: tuple[RabbitMQ, Certificates], queue: str, guest: Any,
                                                 make_source: Any) -> None:
    broker, certs = tls_broker
    amqp = await Amqp.open(broker)
    try:
        await amqp.declare(queue)
        await amqp.publish(queue, 6)
        held = await amqp.get(queue, 2, ack=False)
        assert len(held) == 2
        trusted = {"tls": {"ca_file": str(certs.ca)}}

        src = make_source(settings(broker.https_url, queue, amqp_url=broker.amqps_url, **guest, **trusted))
        expected = {"queue.pending": 4.0, "queue.ack_pending": 2.0, "queue.backlog": 6.0}
        metrics = await read_settled(src.read, lambda m: {k: m.get(k) for k in expected} == expected)
        assert {k: metrics[k] for k in expected} == expected
        # AMQP answers from the queue itself, over TLS as well
        assert await make_source(settings(broker.amqps_url, queue, **guest, **trusted)).read() == {
            "queue.pending": 4.0, "queue.consumers": 0.0}

        # a CA that did not sign the broker's certificate, or none (the system's): refused, said so
        for url in (broker.https_url, broker.amqps_url):
            for tls in ({"tls": {"ca_file": str(certs.other_ca)}}, {}):
                with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                    await make_source(settings(url, queue, **guest, **tls)).read()
    finally:
        await amqp.close()
