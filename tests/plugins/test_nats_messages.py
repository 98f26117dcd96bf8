"""What the NATS source says in the daemon's log when the server is down from the start: once, then once when it is back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from docktor.tools.sdk import SourceError
from docktor.tools.sources.nats import NatsSettings, NatsSource
from tests.support.peers import free_port, start_nats


async def test_a_server_down_from_the_start_is_reported_once_then_its_recovery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port, mport = free_port(), free_port()
    source = NatsSource(NatsSettings(kind="nats", url=f"nats://127.0.0.1:{port}", stream="JOBS", consumer="WORKERS", timeout=0.5))
    caplog.set_level(logging.INFO, logger="docktor.nats")
    try:
        for _ in range(3):  # three ticks, each retrying inside the read
            with pytest.raises(SourceError, match="cannot connect to nats://127.0.0.1"):
                await source.read()
        said = [r.getMessage() for r in caplog.records]
        assert len([m for m in said if "cannot connect" in m]) == 1, said
        assert not [m for m in said if "disconnected" in m], said  # it never connected: nothing to be disconnected from

        server = start_nats(tmp_path / "js", port=port, monitor_port=mport)
        try:
            with pytest.raises(SourceError, match="stream 'JOBS' not found"):  # connected: now the stream is what is missing
                await source.read()
            assert [m for m in (r.getMessage() for r in caplog.records) if "connected again" in m] == [
                f"nats nats://127.0.0.1:{port}: connected again"
            ]
        finally:
            await source.close()
            server.stop()
    finally:
        await source.close()
