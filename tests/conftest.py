"""Shared fixtures: real peers started by the tests themselves (see tests/support/peers.py), always stopped.

Environment switches set by ``.ci/run``: ``DOCKTOR_REQUIRE_DOCKER=1`` and ``DOCKTOR_REQUIRE_LLM=1``
turn "skip: no engine / no model" into a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import ast
import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import swarm_peers
from tests.support.peers import NatsServer, SmallDisk, small_disk, start_nats

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


# --------------------------------------------------------------------------- running in parallel (pytest-xdist)
# `make test` runs the suite on several workers (-n, --dist loadgroup: see pyproject.toml): most
# tests wait on timers, servers and containers, not on the CPU. Two rules keep that correct:
# - a test that uses a server its module starts once (a module-scoped fixture of ours) runs on
#   the worker that holds it: its module is one work unit (xdist_group), other tests spread;
# - the Docker engine is made a swarm before the first test and left (if this run made it one)
#   after the last, so a Compose test never sees swarm mode toggle under it.


#: roughly how long each slow module takes alone (seconds, a serial run on a 2-core machine): the
#: order work is handed out in
SLOWEST: dict[str, float] = {
    "tests/e2e/test_example_nats_multi.py": 270,
    "tests/plugins/test_rabbitmq_source.py": 170,
    "tests/plugins/test_swarm_executor.py": 130,
    "tests/runtime/test_scalein.py": 120,
    "tests/e2e/test_example_nats_swarm.py": 105,
    "tests/plugins/test_compose_executor.py": 100,
    "tests/plugins/test_contract.py": 100,
    "tests/e2e/test_quickstart.py": 80,
    "tests/e2e/test_demo.py": 70,
    "tests/e2e/test_example_celery.py": 65,
    "tests/e2e/test_example_prometheus.py": 65,
    "tests/runtime/test_control.py": 65,
    "tests/e2e/test_example_rabbitmq.py": 55,
    "tests/plugins/test_prometheus_source.py": 50,
    "tests/runtime/test_restart.py": 40,
    "tests/e2e/test_mcp.py": 25,
    "tests/e2e/test_cli.py": 20,
    "tests/plugins/test_source_snapshots.py": 20,
    "tests/runtime/test_loop.py": 20,
    "tests/runtime/test_metrics.py": 20,
    "tests/e2e/test_metrics_prometheus.py": 15,
    "tests/plugins/test_nats_cluster.py": 15,
}

_SWARM_BEFORE = pytest.StashKey[str | None]()


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope in ("class", "module", "package") and (d.baseid or "").startswith("tests")
               for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    if hasattr(config, "workerinput"):
        # the longest first, so the run does not end waiting on one of them (a module stays together)
        items.sort(key=lambda item: -SLOWEST.get(item.nodeid.split("::", 1)[0], 0))


@pytest.hookimpl(tryfirst=True)  # a worker: before it tells the scheduler it has collected
def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("swarm") for item in session.items):
        swarm_peers.hold_swarm_for_the_run()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_SWARM_BEFORE] = swarm_peers.swarm_state()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        swarm_peers.release_swarm(was=session.config.stash.get(_SWARM_BEFORE, None))
