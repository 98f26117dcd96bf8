"""Shared fixtures: real peers started by the tests themselves (see tests/support/peers.py), always stopped.

Environment switches set by ``.ci/run``: ``DOCKTOR_REQUIRE_DOCKER=1`` and ``DOCKTOR_REQUIRE_LLM=1``
turn "skip: no engine / no model" into a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import ast
import gc
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.parallel import (  # noqa: F401  (hooks: the suite on several workers, see its doc)
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_configure_node,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_xdist_make_scheduler,
)
from tests.support.peers import NatsServer, SmallDisk, small_disk, start_nats

# A run started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
# ignored, and so does every command a test starts: the tests that stop one with Ctrl-C, as its
# user would (`daemon logs -f`), would wait for it forever. A terminal's user sends a SIGINT the
# command acts on; so do the tests. (An ignored signal stays ignored across exec, a handled one
# is the default again.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# CPython 3.11 keeps the AST constructor's recursion counter in per-interpreter state, not per
# call (python/cpython#106905; pytest#10763). Any AST built while another is being built resets
# it, and the outer one then fails with "SystemError: AST constructor recursion depth mismatch",
# which pytest turns into an INTERNALERROR that ends the whole run. Seen here: the garbage
# collector, run in the middle of pytest's assertion rewriting, freed an asyncio task whose
# exception nobody had retrieved; asyncio logged it with a traceback, and 3.11's traceback
# calls ast.parse for its carets. So in the test process one AST is built at a time (a lock,
# for threads) and no collection runs meanwhile (for finalizers in the same thread).
_AST_LOCK = threading.RLock()  # re-entrant: a nested parse must never hang the run
_ast_parse = ast.parse


def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _AST_LOCK:
        collecting = gc.isenabled()
        gc.disable()
        try:
            return _ast_parse(*args, **kwargs)
        finally:
            if collecting:
                gc.enable()


ast.parse = _parse_one_at_a_time


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream-enabled nats-server on a free loopback port, per test."""
    server = start_nats(tmp_path / "js")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A real 1 MiB file system mounted at ``tmp_path/state`` (skips without the rights to mount)."""
    d = small_disk(tmp_path / "state", 1024 * 1024)
    try:
        yield d
    finally:
        d.umount()
