"""What the NATS source says when its server is down, killed or stopped: the server and the cause,
once in the daemon's log, in every read's own error when the read can end by itself, and never a
"Task exception was never retrieved" traceback from a request nobody awaited (issue 21)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig

from docktor.tools.sdk import SourceError
from docktor.tools.sources.nats import NatsSettings, NatsSource
from tests.support.peers import NatsServer, free_port, start_nats
from tests.support.waiting import eventually

#: the daemon bounds each read by the service's check_interval; here 1 s, below the source's own timeout
DAEMON_BOUND = 1.0
TIMEOUT = 2.0


def source(url: str, timeout: float = TIMEOUT) -> NatsSource:
    return NatsSource(NatsSettings(kind="nats", url=url, stream="JOBS", consumer="WORKERS", timeout=timeout))


async def with_queue(server: NatsServer) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(name="JOBS", subjects=["jobs.>"])
    await js.add_consumer("JOBS", ConsumerConfig(durable_name="WORKERS"))
    await nc.close()


def said(caplog: pytest.LogCaptureFixture, fragment: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "docktor.nats" and r.levelno >= level and fragment in r.getMessage()]


def never_retrieved(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # a finished task with an exception is freed (and reported by asyncio) by the collector
    return [r.getMessage() for r in caplog.records if r.name == "asyncio" and "never retrieved" in r.getMessage()]



async def no_task_left() -> None:
    """Every task but this test's has ended: a request a read left behind has failed by now."""
    me = asyncio.current_task()
    await eventually("every task the reads started has ended", lambda: all(t is me or t.done() for t in asyncio.all_tasks()), 15)


async def test_a_server_down_from_the_start_is_reported_once_then_its_recovery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port, mport = free_port(), free_port()
    src = source(f"nats://127.0.0.1:{port}", timeout=0.5)
    caplog.set_level(logging.INFO, logger="docktor.nats")
    try:
        for _ in range(3):  # three ticks, each retrying inside the read
            with pytest.raises(SourceError, match="cannot connect to nats://127.0.0.1"):
                await src.read()
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "cannot connect" in m]) == 1, messages
        assert not [m for m in messages if "disconnected" in m], messages  # it never connected: nothing to be disconnected from

        server = start_nats(tmp_path / "js", port=port, monitor_port=mport)
        try:
            with pytest.raises(SourceError, match="stream 'JOBS' not found"):  # connected: now the stream is what is missing
                await src.read()
            assert said(caplog, "connected again") == [f"nats nats://127.0.0.1:{port}: connected again"]
        finally:
            await src.close()
            server.stop()
    finally:
        await src.close()


async def test_a_killed_server_is_named_with_its_cause_once_and_each_read_says_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = start_nats(tmp_path / "js")
    await with_queue(server)
    src = source(server.url)
    try:
        assert (await src.read())["queue.backlog"] == 0.0
        server.proc.kill()  # no goodbye: the connection drops, the client reconnects in the background
        server.proc.wait()
        await eventually("the source says the connection is lost", lambda: bool(said(caplog, "connection lost")), 15)
        assert said(caplog, "connection lost") == [
            f"nats {server.url}: connection lost, reconnecting every 1s: Connection refused"
        ]

        for _ in range(5):  # five ticks of the daemon, each bounded below the source's own timeout
            with pytest.raises(SourceError) as info:  # not the daemon's bare "timed out": the read ends by itself
                await asyncio.wait_for(src.read(), DAEMON_BOUND)
            assert str(info.value) == f"connection to {server.url} lost, reconnecting: Connection refused"
        assert len(said(caplog, "connection lost")) == 1  # once per outage, not once per tick

        restarted = start_nats(server.store_dir, port=server.port, monitor_port=server.monitor_port)
        try:
            await eventually("the client reconnects", lambda: bool(said(caplog, "reconnected")), 15)
            assert (await src.read())["queue.backlog"] == 0.0
            assert said(caplog, "reconnected") == [f"nats {server.url}: reconnected"]
        finally:
            await src.close()
            restarted.stop()
        await no_task_left()
        assert never_retrieved(caplog) == []
    finally:
        await src.close()


async def test_a_stopped_server_cut_off_by_the_daemon_leaves_no_unretrieved_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = start_nats(tmp_path / "js")
    await with_queue(server)
    src = source(server.url)
    stopped = False
    try:
        await src.read()
        os.kill(server.proc.pid, signal.SIGSTOP)  # a server that accepts and never answers: slow, for real
        stopped = True
        for _ in range(3):
            with pytest.raises(TimeoutError):  # the daemon's bound ends these reads before their own timeout
                await asyncio.wait_for(src.read(), DAEMON_BOUND)
        await src.close()
        await no_task_left()
        assert never_retrieved(caplog) == []
        # the record says only "timed out" (the daemon ended the read): the log says where, once
        (cancelled,) = said(caplog, "cancelled")
        assert re.fullmatch(rf"nats {re.escape(server.url)}: a read was cancelled after 1\.\ds with no answer yet \(its own timeout is 2s\)", cancelled)
    finally:
        await src.close()
        if stopped:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
