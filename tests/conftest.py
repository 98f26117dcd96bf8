"""Shared fixtures: real peers started by the tests themselves (see tests/peers.py), always stopped.

Environment switches set by ``.ci/run``: ``DOCKTOR_REQUIRE_DOCKER=1`` and ``DOCKTOR_REQUIRE_LLM=1``
turn "skip: no engine / no model" into a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import NatsServer, start_nats


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream-enabled nats-server on a free loopback port, per test."""
    server = start_nats(tmp_path / "js")
    try:
        yield server
    finally:
        server.stop()
