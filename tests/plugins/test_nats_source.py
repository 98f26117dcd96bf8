"""The NATS JetStream source against a real nats-server: exact figures, rates, faults, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy
from pydantic import ValidationError

from docktor.agent.config.compat import DEPRECATED_SOURCE_KEYS
from docktor.agent.config.load import parse_config
from docktor.tools.sdk import SourceError
from docktor.tools.sources.nats import NatsSettings as Settings
from docktor.tools.sources.nats import NatsSource
from docktor.tools.sources.nats_ages import FROM_MONITOR
from tests.support.clocks import FakeClock
from tests.support.peers import NatsServer, free_port, launch_nats
from tests.support.readings import opened, settling

STREAM, CONSUMER, SUBJECT = "ORDERS", "WORKERS", "orders.new"
RATES = ("queue.rate_in", "queue.rate_out")
#: the Go Docktor's queue keys that load with a warning (migration lives in config/compat)
DEPRECATED_KEYS = DEPRECATED_SOURCE_KEYS["nats"]



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


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_duration_strings() -> None:
    s = Settings.model_validate({"kind": "nats", "stream": "S", "consumer": "C", "timeout": "1500ms"})
    assert s.url == "nats://127.0.0.1:4222"
    assert s.timeout == 1.5
    assert s.monitor_url is None and s.subject is None
    assert Settings.model_validate({"kind": "nats", "stream": "S", "consumer": "C"}).timeout == 2.0


def test_settings_accepts_a_server_list() -> None:
    s = settings("nats://10.0.0.1:4222, nats://10.0.0.2:4222,tls://10.0.0.3:4443")
    assert s.servers == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "tls://10.0.0.3:4443"]


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"lagThreshold": 5}, "lagThreshold", "Extra inputs"),
        ({"stream": "ORD.ERS"}, "stream", "not a JetStream name"),
        ({"consumer": "a b"}, "consumer", "not a JetStream name"),
        ({"url": "nats://bob:secret@host:4222"}, "url", "no credentials in the URL"),
        ({"url": "http://host:4222"}, "url", "scheme"),
        ({"monitor_url": "host:8222"}, "monitor_url", "http(s)"),
        ({"user_env": "NATS_USER"}, None, "go together"),
        ({"token_env": "TOK", "creds_file": "x.creds"}, None, "one of"),
        ({"password_env": "not a name", "user_env": "U"}, "password_env", "must be the name of an environment variable"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": "soon"}, "timeout", "not a duration"),
    ],
)
def test_settings_reject_bad_input(extra: dict[str, Any], field: str | None, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"kind": "nats", "stream": STREAM, "consumer": CONSUMER, **extra})
    errors = info.value.errors()
    assert any(fragment in e["msg"] for e in errors), errors
    if field is not None:
        assert any(e["loc"] and e["loc"][0] == field for e in errors), errors


def test_credentials_never_appear_in_the_url_error() -> None:
    with pytest.raises(ValidationError) as info:
        settings("nats://bob:hunter2@host:4222")
    assert "hunter2" not in str(info.value.errors()[0]["msg"])


GO_QUEUE = {
    "kind": "nats",
    "url": "nats://nats:4222",
    "jetstream": True,
    "stream": "JOBS",
    "consumer": "JOB_WORKERS",
    "subject": "jobs.render",
    "metrics": ["backlog", "lag", "rate_in", "rate_out"],
}


def test_go_format_keys_are_the_deprecated_ones() -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(GO_QUEUE)
    assert {e["loc"][0] for e in info.value.errors()} == set(DEPRECATED_KEYS)
    s = Settings.model_validate({k: v for k, v in GO_QUEUE.items() if k not in DEPRECATED_KEYS})
    assert (s.stream, s.consumer, s.subject, s.url) == ("JOBS", "JOB_WORKERS", "jobs.render", "nats://nats:4222")


GO_SERVICE = """
  - name: renderer
    min_replicas: 1
    max_replicas: 6
    metrics_window: 15
    check_interval: 5
    rules:
      scale_up_when:
        - metric: queue.backlog
          op: ">"
          value: 300
        - metric: queue.rate_in
          op: ">"
          value: 80
      scale_down_when:
        - metric: queue.backlog
          op: "<="
          value: 20
        - metric: queue.rate_out
          op: ">="
          value: 1
    queue:
      kind: nats
      url: nats://nats:4222
      jetstream: true
      stream: JOBS
      consumer: JOB_WORKERS
      subject: jobs.render
      metrics:
        - backlog
        - lag
        - rate_in
        - rate_out
"""


def _check_go_config(text: str) -> None:
    config = parse_config(text)
    assert sorted(config.warnings) == [
        "services[0].metrics_window: deprecated, rates come from consecutive ticks; metrics_window is ignored",
        f"services[0].queue.jetstream: deprecated, {DEPRECATED_KEYS['jetstream']}",
        f"services[0].queue.metrics: deprecated, {DEPRECATED_KEYS['metrics']}",
    ]
    svc = config.services[0]
    q = svc.sources[0].settings
    assert isinstance(q, Settings)
    assert (q.url, q.stream, q.consumer, q.subject) == ("nats://nats:4222", "JOBS", "JOB_WORKERS", "jobs.render")
    assert (svc.min_replicas, svc.max_replicas, svc.check_interval) == (1, 6, 5.0)
    assert [r.text() for r in svc.rules.scale_up_when] == ["queue.backlog > 300", "queue.rate_in > 80"]


def test_parse_config_loads_go_docktor_format() -> None:
    pytest.importorskip("docktor.tools.executors.compose")
    text = (
        'version: "1"\ncompose_file: docker-compose.yaml\n'
        "llm:\n  provider: dmr\n  base_url: http://localhost:12434/engines/llama.cpp/v1\n  model: ai/llama3.2\n"
        "services:" + GO_SERVICE
    )
    _check_go_config(text)
    assert parse_config(text).llm.provider == "dmr"


def test_parse_config_loads_go_queue_block_with_local_executor() -> None:
    # The same Go queue block under the local executor, which needs no compose plugin.
    text = "services:" + GO_SERVICE + "    executor: local\n    command: python worker.py\n"
    _check_go_config(text)


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


# --------------------------------------------------------------------------- faults and recovery


async def test_nothing_listening_raises_source_error(make_source: Any) -> None:
    src = make_source(settings(f"nats://127.0.0.1:{free_port()}"))
    with pytest.raises(SourceError, match="cannot connect"):
        await src.read()


async def test_stopped_server_raises_then_restarted_server_recovers(
    nats_server: NatsServer, js: JetStreamContext, clock: FakeClock, make_source: Any
) -> None:
    await publish(js, 6)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    for m in await sub.fetch(2, timeout=2):
        await m.ack_sync()
    src = make_source(settings(nats_server.url, timeout=0.5), clock)  # the outage's read waits for it
    before = await src.read()

    nats_server.stop()
    with pytest.raises(SourceError):
        await src.read()

    mport = int(nats_server.monitor_url.rsplit(":", 1)[1])
    nats_server.proc = launch_nats(nats_server.port, mport, nats_server.store_dir)  # the fixture stops it
    clock.advance(10.0)
    after = await read_settled(src.read, lambda m: True, within=20)
    # File storage kept the stream and the consumer's state across the restart.
    assert after["queue.pending"] == before["queue.pending"] == 4.0
    assert after["queue.lag"] == before["queue.lag"] == 4.0
    # Same counters on both sides of the outage: the rate is a real zero, not a reset.
    assert after["queue.rate_in"] == 0.0 and after["queue.rate_out"] == 0.0


# --------------------------------------------------------------------------- auth and monitoring fallback


@pytest.fixture
def auth_server(tmp_path: Path) -> Any:
    """A nats-server that requires user/password; its monitoring port needs no credentials."""
    port, mport = free_port(), free_port()
    proc = launch_nats(port, mport, tmp_path / "js", "--user", "docktor", "--pass", "s3cret-pw")
    yield f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{mport}"
    proc.terminate()
    proc.wait(5)


async def _fill(url: str) -> None:
    nc = await nats.connect(url, user="docktor", password="s3cret-pw")
    js = nc.jetstream()
    await setup_queue(js)
    await publish(js, 9)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    for m in await sub.fetch(2, timeout=2):
        await m.ack_sync()
    await sub.fetch(3, timeout=2)
    await nc.close()


async def test_user_and_password_come_from_the_environment(auth_server: Any, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = auth_server
    await _fill(url)
    monkeypatch.setenv("Q_USER", "docktor")
    monkeypatch.setenv("Q_PASS", "s3cret-pw")
    src = make_source(settings(url, user_env="Q_USER", password_env="Q_PASS"))
    metrics = await src.read()
    assert (metrics["queue.pending"], metrics["queue.ack_pending"], metrics["queue.lag"]) == (4.0, 3.0, 4.0)


async def test_unset_credential_variable_is_named(auth_server: Any, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, monitor = auth_server
    monkeypatch.delenv("Q_MISSING_PASS", raising=False)
    monkeypatch.setenv("Q_USER", "docktor")
    src = make_source(settings(url, user_env="Q_USER", password_env="Q_MISSING_PASS", monitor_url=monitor))
    with pytest.raises(SourceError, match=r"Q_MISSING_PASS \(password_env\) is not set"):
        await src.read()


async def test_rejected_credentials_raise_without_monitoring(auth_server: Any, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = auth_server
    monkeypatch.setenv("Q_USER", "docktor")
    monkeypatch.setenv("Q_PASS", "wrong-password")
    src = make_source(settings(url, user_env="Q_USER", password_env="Q_PASS"))
    with pytest.raises(SourceError, match="cannot connect") as info:
        await src.read()
    assert "wrong-password" not in str(info.value)


async def test_rejected_credentials_fall_back_to_monitoring(auth_server: Any, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real fault: the client port refuses these credentials, the monitoring port answers.
    url, monitor = auth_server
    await _fill(url)
    monkeypatch.setenv("Q_USER", "docktor")
    monkeypatch.setenv("Q_PASS", "s3cret-pw")
    good = await make_source(settings(url, user_env="Q_USER", password_env="Q_PASS")).read()

    monkeypatch.setenv("Q_PASS", "wrong-password")
    clock = FakeClock()
    src = make_source(settings(url, user_env="Q_USER", password_env="Q_PASS", monitor_url=monitor), clock)
    via_monitor = await src.read()
    assert src.last_via == "monitor"
    assert good.pop("queue.oldest_age") >= 0  # /jsz holds no message: no age, and the reason says so
    assert via_monitor == good and src.why_absent == {"queue.oldest_age": FROM_MONITOR}

    # Rates work on the fallback path too.
    nc = await nats.connect(url, user="docktor", password="s3cret-pw")
    await publish(nc.jetstream(), 5)
    await nc.close()
    clock.advance(2.0)
    assert (await src.read())["queue.rate_in"] == 2.5


async def test_monitoring_unreachable_too_reports_both_reasons(auth_server: Any, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = auth_server
    monkeypatch.setenv("Q_USER", "docktor")
    monkeypatch.setenv("Q_PASS", "wrong-password")
    dead_monitor = f"http://127.0.0.1:{free_port()}"
    src = make_source(settings(url, user_env="Q_USER", password_env="Q_PASS", monitor_url=dead_monitor))
    with pytest.raises(SourceError, match="cannot connect.*monitoring fallback: .*jsz"):
        await src.read()


async def test_api_and_monitoring_snapshots_agree(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    # Equal snapshots (creation times included) mean a switch between the two paths never
    # looks like a re-created stream.
    await publish(js, 7)
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    for m in await sub.fetch(3, timeout=2):
        await m.ack_sync()
    src = make_source(settings(nats_server.url, monitor_url=nats_server.monitor_url))
    assert (await src._read_api())[0] == await src._read_monitor()


async def test_close_after_the_server_stopped_does_not_raise(nats_server: NatsServer, js: JetStreamContext) -> None:
    # Shutdown order is not ours to choose: NATS may be gone before the daemon stops.
    src = NatsSource(settings(nats_server.url))
    await src.read()
    nc = src._nc
    nats_server.stop()
    await asyncio.sleep(0.05)  # the client notices the disconnect and starts reconnecting
    await src.close()
    assert nc is not None and nc.is_closed and src._nc is None


async def test_close_closes_the_connection(nats_server: NatsServer, js: JetStreamContext, make_source: Any) -> None:
    src = make_source(settings(nats_server.url))
    await src.read()
    nc = src._nc
    assert nc is not None and nc.is_connected
    await src.close()
    assert nc.is_closed
    # A closed source connects again if it is read again (e.g. a daemon reload).
    assert (await src.read())["queue.backlog"] == 0.0


@pytest.fixture
def silent_listener() -> Any:
    """Scripted stand-in for a hung server: a TCP port that accepts connections and never speaks."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"nats://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


async def test_scripted_silent_server_read_times_out(silent_listener: str, make_source: Any) -> None:
    src = make_source(settings(silent_listener, timeout=0.5))
    with pytest.raises(SourceError, match="cannot connect"):
        await src.read()


async def test_scripted_silent_server_cancelled_read_leaves_no_connect_loop(silent_listener: str, make_source: Any) -> None:
    src = make_source(settings(silent_listener, timeout=5))
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(src.read(), 0.2)  # the daemon bounds each read like this
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftovers == []


async def test_token_comes_from_the_environment(tmp_path: Path, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port, mport = free_port(), free_port()
    proc = launch_nats(port, mport, tmp_path / "js", "--auth", "t0ken-value")
    try:
        url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(url, token="t0ken-value")
        js = nc.jetstream()
        await setup_queue(js)
        await publish(js, 3)
        await nc.close()
        monkeypatch.setenv("Q_TOKEN", "t0ken-value")
        metrics = await make_source(settings(url, token_env="Q_TOKEN")).read()
        assert metrics["queue.pending"] == 3.0
        monkeypatch.setenv("Q_TOKEN", "not-the-token")
        with pytest.raises(SourceError, match="cannot connect"):
            await make_source(settings(url, token_env="Q_TOKEN")).read()
    finally:
        proc.terminate()
        proc.wait(5)


async def test_missing_creds_file_is_named(nats_server: NatsServer, make_source: Any, tmp_path: Path) -> None:
    creds = tmp_path / "absent.creds"
    with pytest.raises(SourceError, match="absent.creds.*does not exist"):
        await make_source(settings(nats_server.url, creds_file=str(creds))).read()


async def test_server_without_jetstream_raises(make_source: Any) -> None:
    port, mport = free_port(), free_port()
    proc = launch_nats(port, mport, None)
    try:
        with pytest.raises(SourceError, match="JetStream not available"):
            await make_source(settings(f"nats://127.0.0.1:{port}")).read()
    finally:
        proc.terminate()
        proc.wait(5)
