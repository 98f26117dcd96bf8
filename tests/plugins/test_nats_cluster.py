"""The NATS source on a real 3-node JetStream cluster (replicated stream and consumer): leaders step
down mid-run and the figures stay exact and the rates continuous; and NATS over TLS with a private
CA and a client certificate."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from docktor.tools.sdk import SourceError
from docktor.tools.sources.nats import NatsSettings, NatsSource
from tests.support.clocks import FakeClock
from tests.support.peers import NatsServer, free_port, start_nats, start_nats_cluster
from tests.support.servers import Certificates, make_certificates

STREAM, CONSUMER, SUBJECT = "ORDERS", "WORKERS", "orders.new"



def settings(url: str, **extra: Any) -> NatsSettings:
    return NatsSettings.model_validate({"kind": "nats", "url": url, "stream": STREAM, "consumer": CONSUMER, "timeout": 10, **extra})  # a loaded machine's R3 stream may answer slowly; agreement is what is tested


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    servers = start_nats_cluster(tmp_path)
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


async def _leader(js: JetStreamContext, consumer: bool) -> str | None:
    info = await (js.consumer_info(STREAM, CONSUMER) if consumer else js.stream_info(STREAM))
    return info.cluster.leader if info.cluster else None


async def fetch(sub: JetStreamContext.PullSubscription, n: int) -> list[Msg]:
    """``n`` messages from the replicated consumer, once it can serve them.

    A pull is answered by the consumer's leader. Right after the consumer is created, or after
    its leader stepped down, the server this client talks to may know of no leader's interest
    yet and answers 503 (no responders) at once; no message is handed out then, so asking again
    until one answers loses and duplicates nothing.
    """
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            return await sub.fetch(n, timeout=5)
        except ServiceUnavailableError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def publish(js: JetStreamContext, data: bytes) -> None:
    """Publish one message to the replicated stream, once it can store it.

    A publish is answered by the stream's leader. Right after the stream is created, or after its
    leader stepped down, the server this client talks to may not yet have heard of the new
    leader's interest in the subject (it travels over the cluster's routes) and answers "no
    responders" at once; nothing was stored then, so publishing again loses and duplicates
    nothing. (CI saw this on the very first publish of a run.)
    """
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await js.publish(SUBJECT, data)
            return
        except NoStreamResponseError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def step_down(nc: Client, js: JetStreamContext, consumer: bool) -> tuple[str, str]:
    """Ask the stream's (or the consumer's) leader to step down; wait until another one leads."""
    before = await _leader(js, consumer)
    subject = f"$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.{CONSUMER}" if consumer else f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}"
    reply = json.loads((await nc.request(subject, b"", timeout=10)).data)
    assert reply.get("success") is True, reply
    for _ in range(200):
        try:
            after = await _leader(js, consumer)
        except Exception:  # no leader for a moment: that is the step-down
            after = None
        if after is not None and after != before:
            assert before is not None
            return before, after
        await asyncio.sleep(0.05)
    pytest.fail(f"no new {'consumer' if consumer else 'stream'} leader after {before} stepped down")


async def test_leader_step_downs_keep_figures_exact_and_rates_continuous(cluster: list[NatsServer]) -> None:
    urls = ",".join(s.url for s in cluster)
    nc = await nats.connect(servers=[s.url for s in cluster])
    js = nc.jetstream()
    src = NatsSource(settings(urls), clock=(clock := FakeClock()))
    try:
        await js.add_stream(name=STREAM, subjects=["orders.>"], num_replicas=3)
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=120))
        for i in range(20):
            await publish(js, f"order {i}".encode())
        sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
        taken = await fetch(sub, 8)
        for m in taken[:5]:
            await m.ack_sync()
        held = taken[5:]  # 3 in flight, acked oldest first later so the ack floor moves by exactly that

        first = await src.read()
        assert {k: first[k] for k in ("queue.pending", "queue.ack_pending", "queue.backlog", "queue.lag")} == {
            "queue.pending": 12.0, "queue.ack_pending": 3.0, "queue.backlog": 15.0, "queue.lag": 12.0,
        }
        leaders: list[tuple[str, str]] = []
        missed = 0
        for round_ in range(1, 5):
            leaders.append(await step_down(nc, js, consumer=round_ % 2 == 0))
            for i in range(4):
                await publish(js, f"round {round_} order {i}".encode())
            held += await fetch(sub, 2)
            for m in held[:2]:
                await m.ack_sync()
            held = held[2:]
            clock.now += 2.0
            for attempt in range(2):  # at most one tick may be missing right after a leader change
                try:
                    metrics = await src.read()
                    break
                except SourceError:
                    missed += 1
                    assert attempt == 0, "more than one tick missing after a step-down"
            # exact after every change: 4 published, 2 delivered and 2 acked per round
            assert metrics["queue.pending"] == 12.0 + 2 * round_
            assert metrics["queue.ack_pending"] == 3.0
            assert metrics["queue.backlog"] == 15.0 + 2 * round_
            assert metrics["queue.lag"] == 12.0 + 2 * round_
            # continuous: the same rates every round, no spike and no reset
            assert (metrics["queue.rate_in"], metrics["queue.rate_out"]) == (2.0, 1.0), (round_, metrics, src.last_reset)
        assert len({after for _, after in leaders}) >= 2  # leadership really moved around the cluster
        assert missed <= 4
    finally:
        await src.close()
        await nc.close()


async def test_reading_through_any_single_server_agrees(cluster: list[NatsServer]) -> None:
    # The JetStream API answers from the leaders whichever server a client is connected to
    # (unlike /jsz of one node, which can be stale after a leader change).
    nc = await nats.connect(cluster[0].url)
    js = nc.jetstream()
    try:
        await js.add_stream(name=STREAM, subjects=["orders.>"], num_replicas=3)
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=120))
        for i in range(9):
            await publish(js, f"order {i}".encode())
        sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
        for m in (await fetch(sub, 4))[:1]:
            await m.ack_sync()
        readings, stored = [], []
        for server in cluster:
            src = NatsSource(settings(server.url))
            try:
                reading = dict(await src.read())
                # the age grows between the reads: the time it says the next message was stored must agree
                stored.append(time.time() - reading.pop("queue.oldest_age"))
                readings.append(reading)
            finally:
                await src.close()
        assert all(r == readings[0] for r in readings), readings
        assert max(stored) - min(stored) < 1.0, stored  # the same message, read through each server
        assert (readings[0]["queue.pending"], readings[0]["queue.ack_pending"]) == (5.0, 3.0)
    finally:
        await nc.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(tmp_path: Path, certs: Certificates) -> Iterator[NatsServer]:
    """A nats-server requiring TLS with a client certificate signed by the private CA."""
    server = start_nats(
        tmp_path / "js", "--tls", "--tlscert", str(certs.server_cert), "--tlskey", str(certs.server_key),
        "--tlscacert", str(certs.ca), "--tlsverify",
    )
    try:
        yield server
    finally:
        server.stop()


async def test_tls_with_a_private_ca_and_a_client_certificate(tls_server: NatsServer, certs: Certificates) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    nc = await nats.connect(tls_server.url, tls=ctx)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["orders.>"])
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT))
    for i in range(6):
        await js.publish(SUBJECT, f"order {i}".encode())
    await nc.close()

    tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
    for url in (tls_server.url, tls_server.url.replace("nats://", "tls://")):
        src = NatsSource(settings(url, tls=tls))
        try:
            assert (await src.read())["queue.pending"] == 6.0
        finally:
            await src.close()

    refused = [
        ({**tls, "ca_file": str(certs.other_ca)}, "certificate verify failed"),  # the server is not who the CA vouches for
        ({"ca_file": str(certs.ca)}, "cannot connect"),  # no client certificate
    ]
    for bad, fragment in refused:
        src = NatsSource(settings(tls_server.url, tls=bad, timeout=1))
        try:
            with pytest.raises(SourceError, match=fragment):
                await src.read()
        finally:
            await src.close()


async def test_tls_files_that_do_not_exist_are_named(tmp_path: Path) -> None:
    src = NatsSource(settings(f"nats://127.0.0.1:{free_port()}", tls={"ca_file": str(tmp_path / "nowhere.pem")}))
    with pytest.raises(SourceError, match=r"tls\.ca_file: .*nowhere\.pem does not exist"):
        await src.read()
    assert NatsSource.check(src.settings, src.context) == [f"tls.ca_file: {tmp_path / 'nowhere.pem'} does not exist"]
