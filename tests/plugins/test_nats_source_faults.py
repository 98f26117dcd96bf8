"""The NATS JetStream source against a real nats-server when things go wrong: nothing listening, a
server stopped and restarted, credentials from the environment (user/password, token, creds file),
the monitoring fallback and its agreement with the API, a silent scripted server, closing, and a
server without JetStream."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from docktor.tools.sdk import SourceError
from docktor.tools.sources.nats import NatsSource
from docktor.tools.sources.nats_ages import FROM_MONITOR
from tests.support.clocks import FakeClock
from tests.support.nats_source_setup import *  # noqa: F403  (fixtures, found by name: clock, js, make_source)
from tests.support.nats_source_setup import CONSUMER, STREAM, publish, read_settled, settings, setup_queue
from tests.support.peers import NatsServer, free_port, launch_nats

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
