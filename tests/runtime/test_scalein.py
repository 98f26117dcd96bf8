"""Scale-in loses no message, on every executor: a real JetStream consumer, real workers, the real executor.

The load of ``benchmarks/scalein.py`` (its ``measure`` and its backends), shorter: a publisher
at 180 msg/s, four replicas of the example consumer (drains on SIGTERM), repeated scale-ins to
one, two or three replicas with messages in flight. JetStream counts what was never
acknowledged. The figures with 24 scale-ins per executor, and what a worker that ignores SIGTERM
costs, are in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.scalein import Result, run_one
from tests.support.peers import docker_ok, need
from tests.support.swarm_peers import SWARM_SKIP_REASON, swarm_possible

pytestmark = pytest.mark.timeout(600)


def check(result: Result, scale_ins: int) -> None:
    assert result.scale_ins == scale_ins and not result.failed_scales, result.failed_scales
    assert result.published > 1000
    assert max(result.in_flight_at_scale_in) > 0, "no scale-in happened with messages in flight"
    assert result.replicas_removed == sum(4 - (1, 2, 3)[i % 3] for i in range(scale_ins))
    assert result.killed == 0, "a draining worker was killed at the end of its grace period"
    assert result.lost == 0, f"{result.lost} of {result.published} messages were never acknowledged"


def test_local_scale_in_loses_nothing() -> None:
    check(asyncio.run(run_one("local", "drain", scale_ins=6, rate=180, log=print)), 6)


@pytest.mark.docker
def test_compose_scale_in_loses_nothing() -> None:
    need(docker_ok(), "no Docker engine with Compose v2 reachable", "DOCKTOR_REQUIRE_DOCKER")
    check(asyncio.run(run_one("compose", "drain", scale_ins=3, rate=180, log=print)), 3)


@pytest.mark.docker
@pytest.mark.swarm
def test_swarm_scale_in_loses_nothing() -> None:
    need(swarm_possible() and docker_ok(), SWARM_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    check(asyncio.run(run_one("swarm", "drain", scale_ins=3, rate=180, log=print)), 3)
