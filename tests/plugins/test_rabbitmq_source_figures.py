"""The RabbitMQ source's settings, and its figures against a real broker (Debian's rabbitmq-server,
management plugin on, statistics every second): exact counts, consumers and utilisation, vhost/queue
names that need URL-encoding, rates from counters, deleted and re-created queues, and (a scripted
stand-in) the same statistics sample read twice.

Credentials, faults, the AMQP-only mode and TLS: test_rabbitmq_source_connections.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from docktor.tools.sdk import SourceError
from docktor.tools.sources.rabbitmq import AMQP_METRICS, MANAGEMENT_METRICS, RabbitMQSource
from docktor.tools.sources.rabbitmq import RabbitMQSettings as Settings
from tests.support.clocks import FakeClock
from tests.support.rabbitmq_source_setup import *  # noqa: F403  (fixtures, found by name: amqp, broker, guest, make_source, queue)
from tests.support.rabbitmq_source_setup import CANARY, RATES, Amqp, read_settled, settings, settled
from tests.support.servers import RabbitMQ

# --------------------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    s = Settings.model_validate({"kind": "rabbitmq", "queue": "jobs"})
    assert (s.url, s.vhost, s.timeout, s.amqp) == ("http://127.0.0.1:15672", "/", 2.0, False)
    assert RabbitMQSource.metrics_for(s) == MANAGEMENT_METRICS
    amqp = Settings.model_validate({"kind": "rabbitmq", "queue": "jobs", "url": "amqp://10.0.0.5"})
    assert amqp.amqp and RabbitMQSource.metrics_for(amqp) == AMQP_METRICS
    assert set(AMQP_METRICS) == {"queue.pending", "queue.consumers"}  # no backlog, no rates: the weaker mode


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"url": f"http://guest:{CANARY}@host:15672"}, "url", "no credentials in the URL"),
        ({"url": "ftp://host"}, "url", "management API"),
        ({"url": "amqp://host/vh"}, "url", "vhost goes in vhost:"),
        ({"username_env": "U"}, None, "go together"),
        ({"username_env": "U", "password_env": CANARY + " x"}, "password_env", "must be the name of an environment variable"),
        ({"tls": {"ca_file": "ca.pem"}}, None, "https:// or amqps://"),
        ({"url": "https://h", "tls": {"cert_file": "c.pem"}}, "tls", "go together"),
        ({"queue": ""}, "queue", "1 to 255 bytes"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"prefetch": 3}, "prefetch", "Extra inputs"),
    ],
)
def test_settings_reject_bad_input(extra: dict[str, Any], field: str | None, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"kind": "rabbitmq", "queue": "jobs", **extra})
    errors = info.value.errors()
    assert any(fragment in e["msg"] for e in errors), errors
    assert all(CANARY not in e["msg"] for e in errors)
    if field is not None:
        assert any(e["loc"] and e["loc"][0] == field for e in errors), errors


# --------------------------------------------------------------------------- figures


async def test_publish_take_and_ack_give_exact_figures(broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any) -> None:
    await amqp.declare(queue)
    await amqp.publish(queue, 10)
    await amqp.get(queue, 3, ack=True)  # K = 3 done
    held = await amqp.get(queue, 4, ack=False)  # M = 4 in flight, unacknowledged
    assert len(held) == 4
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, **guest))
    expected = {"queue.pending": 3.0, "queue.ack_pending": 4.0, "queue.backlog": 7.0, "queue.consumers": 0.0}
    # polled only because the management API publishes statistics every few seconds
    metrics = await read_settled(src.read, lambda m: {k: m.get(k) for k in expected} == expected)
    assert {k: metrics[k] for k in expected} == expected
    assert set(metrics) <= set(MANAGEMENT_METRICS)


async def test_consumers_and_utilisation_are_read(broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any) -> None:
    await amqp.declare(queue)
    worker = await amqp.conn.channel()
    await worker.basic_qos(prefetch_count=1)
    await worker.basic_consume(queue, lambda m: asyncio.sleep(0))  # holds one, never acks
    await amqp.publish(queue, 5)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, **guest))
    metrics = await read_settled(src.read, lambda m: m.get("queue.consumers") == 1.0 and m.get("queue.ack_pending") == 1.0)
    assert metrics["queue.pending"] == 4.0 and metrics["queue.backlog"] == 5.0
    assert 0.0 <= metrics["queue.consumer_utilisation"] <= 1.0
    await worker.close()


async def test_vhost_and_queue_names_are_url_encoded(broker: RabbitMQ, guest: Any, make_source: Any) -> None:
    # AMQP clients refuse such names (pamqp checks the spec's charset); RabbitMQ and its API do not.
    vhost, name = "team/a b", "jobs/with space?&#"
    v, q = quote(vhost, safe=""), quote(name, safe="")
    broker.api("PUT", f"vhosts/{v}")
    broker.api("PUT", f"permissions/{v}/guest", b'{"configure":".*","write":".*","read":".*"}')
    broker.api("PUT", f"queues/{v}/{q}", b'{"durable":true}')
    for _ in range(6):
        broker.api("POST", f"exchanges/{v}/amq.default/publish",
                   json.dumps({"properties": {}, "routing_key": name, "payload": "x", "payload_encoding": "string"}).encode())
    src = make_source(settings(broker.url, name, amqp_url=broker.amqp_url, vhost=vhost, **guest))
    metrics = await read_settled(src.read, lambda m: m.get("queue.pending") == 6.0)
    assert metrics["queue.backlog"] == 6.0
    # the exact count is not asked over AMQP for such a name (and never raises): the API's stands in
    assert src.amqp_problem == f"queue {name!r} cannot be named over AMQP: the AMQP client refuses it (Invalid value for queue)"
    with pytest.raises(SourceError, match="queue 'jobs/with space' not found in vhost 'team/a b'"):
        await make_source(settings(broker.url, "jobs/with space", amqp_url=broker.amqp_url, vhost=vhost, **guest)).read()
    with pytest.raises(SourceError, match="cannot be named over AMQP"):
        await make_source(settings(broker.amqp_url, name, vhost=vhost, **guest)).read()


# --------------------------------------------------------------------------- rates


async def test_rates_come_from_counters_over_a_known_interval(
    broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any
) -> None:
    clock = FakeClock()
    await amqp.declare(queue)
    await amqp.publish(queue, 4)
    await settled(broker, queue, publish=4, messages_ready=4)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, **guest), clock)
    first = await src.read()
    assert not set(RATES) & first.keys()  # absent, not zero
    assert src.last_reset == "first reading"

    await amqp.publish(queue, 6)
    await settled(broker, queue, publish=10, messages_ready=10)
    clock.advance(2.0)
    second = await src.read()
    assert (second["queue.rate_in"], second["queue.rate_out"]) == (3.0, 0.0)

    await amqp.get(queue, 8, ack=True)
    await settled(broker, queue, publish=10, ack=8, messages_ready=2)
    clock.advance(4.0)
    third = await src.read()
    assert (third["queue.rate_in"], third["queue.rate_out"]) == (0.0, 2.0)
    assert third["queue.backlog"] == 2.0


async def test_no_ack_deliveries_count_as_rate_out(broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any) -> None:
    # Workers in no-ack mode finish a message on delivery: rate_out counts those deliveries.
    clock = FakeClock()
    await amqp.declare(queue)
    await amqp.publish(queue, 6)
    await settled(broker, queue, publish=6, messages_ready=6)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, **guest), clock)
    await src.read()
    for _ in range(6):
        await amqp.channel.basic_get(queue, no_ack=True)
    await settled(broker, queue, deliver_get=6, messages_ready=0)
    clock.advance(3.0)
    assert (await src.read())["queue.rate_out"] == 2.0


async def test_deleted_queue_is_named_and_recreated_queue_omits_rates(
    broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any
) -> None:
    clock = FakeClock()
    await amqp.declare(queue)
    await amqp.publish(queue, 10)
    await settled(broker, queue, publish=10, messages_ready=10)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, **guest), clock)
    await src.read()

    await amqp.channel.queue_delete(queue)
    with pytest.raises(SourceError, match=f"queue '{queue}' not found in vhost '/'"):
        await src.read()

    # more messages than before: only the gap tells that the counters are a new queue's
    await amqp.declare(queue)
    await amqp.publish(queue, 12)
    await settled(broker, queue, publish=12, messages_ready=12)
    clock.advance(2.0)
    after = await src.read()
    assert not set(RATES) & after.keys()
    assert after["queue.pending"] == 12.0 and src.last_reset == "queue re-created"

    await amqp.publish(queue, 2)
    await settled(broker, queue, publish=14)
    clock.advance(2.0)
    assert (await src.read())["queue.rate_in"] == 1.0


async def test_queue_recreated_between_two_reads_never_gives_a_negative_rate(
    broker: RabbitMQ, amqp: Amqp, queue: str, guest: Any, make_source: Any
) -> None:
    clock = FakeClock()
    await amqp.declare(queue)
    await amqp.publish(queue, 9)
    await amqp.get(queue, 5, ack=True)
    await settled(broker, queue, publish=9, ack=5, messages_ready=4)
    src = make_source(settings(broker.url, queue, amqp_url=broker.amqp_url, **guest), clock)
    await src.read()

    await amqp.channel.queue_delete(queue)  # the source does not see the gap
    await amqp.declare(queue)
    await amqp.publish(queue, 3)
    await settled(broker, queue, publish=3, messages_ready=3)
    clock.advance(2.0)
    after = await src.read()
    assert not set(RATES) & after.keys()
    assert src.last_reset is not None and "re-created" in src.last_reset
    assert after["queue.backlog"] == 3.0


# --------------------------------------------------------------------------- the statistics lag (scripted stand-in)


@pytest.fixture
def scripted_api() -> Iterator[tuple[str, dict[str, Any]]]:
    """A scripted stand-in for the management API: answers every queue request with ``state["queue"]``,
    so a test decides when the "broker" publishes a new statistics sample (a real broker cannot be
    made to skip or delay one on demand)."""
    import http.server
    import threading

    state: dict[str, Any] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state["queue"]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def _queue(ready: int, published: int, acked: int, reductions: int) -> dict[str, Any]:
    return {"name": "jobs", "messages_ready": ready, "messages_unacknowledged": 0, "consumers": 1,
            "reductions": reductions, "message_stats": {"publish": published, "ack": acked}}


async def test_scripted_same_statistics_sample_is_not_a_rate_of_zero(scripted_api: Any, make_source: Any) -> None:
    url, state = scripted_api
    clock = FakeClock()
    src = make_source(settings(url, "jobs", statistics_interval=5, ready_over_amqp=False), clock)
    state["queue"] = _queue(100, 1000, 900, 5000)
    await src.read()
    state["queue"] = _queue(110, 1050, 940, 5100)  # the broker's next sample, seen 5 s later
    clock.advance(5.0)
    assert {k: v for k, v in (await src.read()).items() if k in RATES} == {"queue.rate_in": 10.0, "queue.rate_out": 8.0}

    # ticks faster than the statistics: the same sample again keeps the last period's rates
    for _ in range(3):
        clock.advance(1.0)
        again = await src.read()
        assert (again["queue.rate_in"], again["queue.rate_out"]) == (10.0, 8.0)
        assert src.last_reset == "no new statistics since the previous reading"
    state["queue"] = _queue(100, 1070, 970, 5200)  # the next sample: the rate spans both periods' ticks
    clock.advance(2.0)
    nxt = await src.read()
    assert (nxt["queue.rate_in"], nxt["queue.rate_out"]) == (4.0, 6.0)  # 20 and 30 over 5 s

    # an idle queue stops emitting statistics: unchanged for two periods is a real zero
    clock.advance(10.0)
    idle = await src.read()
    assert (idle["queue.rate_in"], idle["queue.rate_out"]) == (0.0, 0.0)
