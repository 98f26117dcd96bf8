"""The suite on several pytest-xdist workers (``make test``: ``-n 4 --dist loadgroup``), correctly.

Most tests wait on timers, servers and containers, not on the CPU, so workers overlap the waits.
Three rules keep that correct and the run short (hooks imported by tests/conftest.py):

- **A module that shares a server stays on one worker.** A test that uses a module-scoped fixture
  of ours (a broker, a Prometheus, a swarm stack started once per module) is grouped with its
  module; a test can also name its group (``pytest.mark.xdist_group``). Other tests spread one by
  one. xdist 3.8 would put the group on the node id, which pytest 9 no longer lets it change, so
  each worker writes the groups it collected to a folder the controller's scheduler reads.
- **The slowest first**: work is handed out in the order of :data:`SLOWEST`, so the run does not
  end waiting on one long test that started last.
- **The swarm is the run's**: when Swarm tests (marked ``swarm``) are collected, the Docker engine
  is made a swarm before any test runs and left (if the run made it one) after the last, so a
  Compose test running beside a Swarm test never sees swarm mode toggle under it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support import swarm_peers

__all__ = [
    "SLOWEST", "pytest_collection_finish", "pytest_collection_modifyitems", "pytest_configure_node", "pytest_sessionfinish",
    "pytest_sessionstart", "pytest_xdist_make_scheduler",
]

#: roughly how long each slow module takes alone (seconds, a serial run on a 2-core machine; the
#: RabbitMQ example at its worst: 40 s, or 180 s when the docktor policy keeps max_replicas for the
#: burst it has just seen)
SLOWEST: dict[str, float] = {
    "tests/e2e/test_example_nats_multi.py": 270,
    "tests/e2e/test_example_rabbitmq.py": 180,
    "tests/runtime/test_scalein.py": 120,
    "tests/e2e/test_example_nats_swarm.py": 105,
    "tests/plugins/test_contract.py": 100,
    "tests/plugins/test_rabbitmq_source_connections.py": 95,  # with _figures, the 170 s module (measured here)
    "tests/e2e/test_image.py": 90,  # a build from nothing takes a minute more
    "tests/plugins/test_rabbitmq_source_figures.py": 85,
    "tests/plugins/test_swarm_executor_scaling.py": 80,  # with _engine, the 130 s module: each deploys its stack
    "tests/plugins/test_swarm_executor_engine.py": 80,
    "tests/e2e/test_quickstart.py": 80,
    "tests/plugins/test_compose_executor_scaling.py": 75,  # with _status, the 100 s module (split estimated)
    "tests/e2e/test_demo.py": 70,
    "tests/e2e/test_example_celery.py": 65,
    "tests/e2e/test_example_prometheus.py": 65,
    "tests/plugins/test_prometheus_source.py": 50,
    "tests/runtime/test_control_channel.py": 45,  # with _who_acts, the 65 s module, split as measured here (85 s : 39 s)
    "tests/runtime/test_restart.py": 40,
    "tests/plugins/test_compose_executor_status.py": 25,
    "tests/runtime/test_control_who_acts.py": 20,
    "tests/e2e/test_cli.py": 20,
    "tests/plugins/test_source_snapshots.py": 20,
    "tests/runtime/test_loop.py": 20,
    "tests/e2e/test_mcp_http.py": 17,  # 2/3 of the 25 s module (23 s and 49 s measured here, loaded); _tools under 15
    "tests/runtime/test_metrics_endpoint.py": 16,  # measured here; _names_and_values (7 s) is under 15
    "tests/e2e/test_metrics_prometheus.py": 15,
    "tests/plugins/test_nats_cluster.py": 15,
}

_GROUPS_DIR = pytest.StashKey[Path]()
_SWARM_BEFORE = pytest.StashKey[str | None]()


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _group(item: pytest.Item) -> str | None:
    """The item's xdist_group, or its module's when it uses a module-scoped fixture of ours."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    info = getattr(item, "_fixtureinfo", None)
    shares = info is not None and any(
        d.scope in ("class", "module", "package") and (d.baseid or "").startswith("tests")
        for defs in info.name2fixturedefs.values() for d in defs
    )
    return _module(item) if shares else None


def _worker(config: pytest.Config) -> dict[str, Any] | None:
    return getattr(config, "workerinput", None)


# --------------------------------------------------------------------------- in each worker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _worker(config) is not None:  # the scheduler hands out units in collection order
        items.sort(key=lambda item: -SLOWEST.get(_module(item), 0))  # stable: a module stays in order


@pytest.hookimpl(tryfirst=True)  # before the worker tells the controller it has collected
def pytest_collection_finish(session: pytest.Session) -> None:
    worker = _worker(session.config)
    if worker is not None and "docktor_groups" in worker:
        groups = {item.nodeid: g for item in session.items if (g := _group(item)) is not None}
        (Path(worker["docktor_groups"]) / f"{worker['workerid']}.json").write_text(json.dumps(groups))
    if any(item.get_closest_marker("swarm") for item in session.items):
        swarm_peers.hold_swarm_for_the_run()


# --------------------------------------------------------------------------- in the controller


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    config = node.config
    if _GROUPS_DIR not in config.stash:
        config.stash[_GROUPS_DIR] = Path(tempfile.mkdtemp(prefix="docktor-xdist-groups-"))
    node.workerinput["docktor_groups"] = str(config.stash[_GROUPS_DIR])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]
        """Load scheduling in units: a group (see the module doc) or a single test."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected (and written) by now
                self.groups = {}
                for file in sorted(config.stash[_GROUPS_DIR].glob("*.json")):
                    self.groups.update(json.loads(file.read_text()))
            return self.groups.get(nodeid, nodeid)

    return ByGroup(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    if _worker(session.config) is None:
        session.config.stash[_SWARM_BEFORE] = swarm_peers.swarm_state()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _worker(session.config) is None:
        swarm_peers.release_swarm(was=session.config.stash.get(_SWARM_BEFORE, None))
        if _GROUPS_DIR in session.config.stash:
            shutil.rmtree(session.config.stash[_GROUPS_DIR], ignore_errors=True)
