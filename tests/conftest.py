"""Shared fixtures: real peers started by the tests themselves (see tests/peers.py), always stopped.

Environment switches set by ``.ci/run``: ``DOCKTOR_REQUIRE_DOCKER=1`` and ``DOCKTOR_REQUIRE_LLM=1``
turn "skip: no engine / no model" into a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import NatsServer, start_nats

# CPython 3.11 keeps the AST constructor's recursion counter in per-interpreter state, not per
# call: when two threads build an AST at the same time (pytest parsing a test file to show a
# failure while a test's thread formats a traceback, which 3.11 does with ast.parse for its
# carets), one resets the other's counter and pytest stops the whole run with "INTERNALERROR ...
# SystemError: AST constructor recursion depth mismatch" (python/cpython#106905, pytest#10763).
# Every ast.parse in this process goes through one lock, so only one AST is built at a time.
_AST_LOCK = threading.RLock()
_ast_parse = ast.parse


def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _AST_LOCK:
        return _ast_parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream-enabled nats-server on a free loopback port, per test."""
    server = start_nats(tmp_path / "js")
    try:
        yield server
    finally:
        server.stop()
