"""The Swarm executor scaling against a real engine turned into a single-node swarm by the tests:
up, down, to zero and back, the grace period, CPU and memory, and the failures a scale must report
(an image not available, a task exiting at start, constraints no node meets, a host port taken,
tasks never healthy).

One stack per module (``STACK``, tests/support/swarm_stack.py, deployed with ``docker stack
deploy``), with a service per behaviour; each test scales its own service and reads the outcome
through the Engine API (tests/support/swarm_peers.py), not from the executor.

Refusals, the engine Docktor talks to and the daemon: test_swarm_executor_engine.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from docktor.tools.executors.swarm import SwarmExecutor
from tests.support.swarm_peers import (
    client,
    replicas_spec,
    running_tasks,
)
from tests.support.swarm_stack import *  # noqa: F403  (fixtures, found by name: stack)
from tests.support.swarm_stack import Stack, run, scale, status, task_ids

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(300)]


# --------------------------------------------------------------------------- scaling


def test_scale_up_and_down_verified_by_the_engine_leaves_other_services_and_kept_tasks_alone(stack: Stack) -> None:
    worker, other = stack.service("worker"), stack.service("other")
    other_before = task_ids(other)
    first = task_ids(worker)
    spec_before = client().api.inspect_service(worker)["Spec"]

    up, = run(scale(stack.executor("worker"), 4))

    assert up.ok, up.message
    assert up.running == 4
    assert replicas_spec(worker) == 4 and len(running_tasks(worker)) == 4
    assert first <= task_ids(worker), "a scale restarted a task that was running"
    spec_after = client().api.inspect_service(worker)["Spec"]
    spec_after["Mode"]["Replicated"]["Replicas"] = spec_before["Mode"]["Replicated"]["Replicas"]
    assert spec_after == spec_before, "a scale changed more of the spec than the replica count"
    st = run(status(stack.executor("worker")))
    assert (st.desired, st.running, st.failed) == (4, 4, 0)

    kept_before = task_ids(worker)
    down, = run(scale(stack.executor("worker"), 2))

    assert down.ok, down.message
    assert replicas_spec(worker) == 2 and len(running_tasks(worker)) == 2
    assert task_ids(worker) <= kept_before
    assert len(down.removed) == 2
    assert all(r.replica.startswith(f"{worker}.") and "chosen by Swarm" in r.why for r in down.removed)
    # each removed worker got SIGTERM and drained before it exited
    assert all(r.stopped.startswith("exited with code 0 ") and r.stopped.endswith(" after SIGTERM") for r in down.removed), down.removed
    assert len(list(stack.drained.iterdir())) == 2
    assert task_ids(other) == other_before  # same two tasks, never restarted


def test_last_scaled_is_the_services_update_that_changed_its_count_and_target_names_it(stack: Stack) -> None:
    async def scale_then_ask(ex: SwarmExecutor, n: int) -> Any:
        try:
            before = time.time()
            outcome = await ex.scale(n)
            assert outcome.ok, outcome.message
            return before, await ex.last_scaled()
        finally:
            await ex.close()

    ex = stack.executor("worker")
    assert ex.target().endswith(f"/swarm/{stack.service('worker')}")
    current = replicas_spec(stack.service("worker"))
    before, up = run(scale_then_ask(ex, current + 1))
    assert up is not None and up.direction == "up" and before - 2 <= up.at <= time.time() + 1
    before, down = run(scale_then_ask(stack.executor("worker"), current))
    assert down is not None and down.direction == "down" and before - 2 <= down.at <= time.time() + 1


def test_scale_to_zero_and_back(stack: Stack) -> None:
    zero, one = run(scale(stack.executor("healthy"), 0, 1))
    assert zero.ok and one.ok, (zero.message, one.message)
    assert len(running_tasks(stack.service("healthy"))) == 1
    back, = run(scale(stack.executor("healthy"), 0))
    assert back.ok, back.message
    assert running_tasks(stack.service("healthy")) == []


def test_replica_that_ignores_sigterm_is_killed_after_the_grace_and_the_record_says_so(stack: Stack) -> None:
    outcome, = run(scale(stack.executor("stubborn"), 1))
    assert outcome.ok, outcome.message
    assert [r.stopped for r in outcome.removed] == ["ignored SIGTERM for 1 s: SIGKILL"]
    assert len(running_tasks(stack.service("stubborn"))) == 1


def test_status_reports_cpu_and_memory_of_the_tasks_on_this_node(stack: Stack) -> None:
    async def until_cpu() -> Any:
        ex = stack.executor("other")
        try:
            for _ in range(40):  # figures are refreshed in the background; CPU needs two readings
                st = await ex.status()
                if "cpu.max" in st.metrics:
                    return st
                await asyncio.sleep(0.5)
            raise AssertionError(f"no CPU figures: {st.metrics}")
        finally:
            await ex.close()

    st = run(until_cpu())
    assert (st.desired, st.running) == (2, 2)
    assert {"cpu.avg", "cpu.max", "mem.avg_mb", "mem.max_mb"} <= st.metrics.keys()
    assert 0 <= st.metrics["cpu.avg"] <= st.metrics["cpu.max"] < 50  # two sleeping workers
    assert 0 < st.metrics["mem.avg_mb"] <= st.metrics["mem.max_mb"]
    assert "mem.avg_pct" not in st.metrics  # no memory limit in the stack file


# --------------------------------------------------------------------------- failures


def test_image_that_is_not_available_is_an_error_with_the_tasks_own_text(stack: Stack) -> None:
    outcome, = run(scale(stack.executor("broken"), 2))
    assert not outcome.ok
    assert "No such image: docktor-test/no-such-image:never" in outcome.message
    assert f"task {stack.service('broken')}." in outcome.message
    assert outcome.running == 0
    st = run(status(stack.executor("broken")))
    assert st.running == 0 and st.failed >= 1 and "No such image" in st.detail
    run(scale(stack.executor("broken"), 0))


def test_task_that_exits_at_start_is_an_error(stack: Stack) -> None:
    outcome, = run(scale(stack.executor("crasher"), 1))
    assert not outcome.ok
    assert "non-zero exit (3)" in outcome.message
    run(scale(stack.executor("crasher"), 0))


def test_no_node_satisfying_the_constraints_is_an_error(stack: Stack) -> None:
    outcome, = run(scale(stack.executor("picky"), 1))
    assert not outcome.ok
    assert "no suitable node" in outcome.message and "pending" in outcome.message
    run(scale(stack.executor("picky"), 0))


def test_a_host_mode_port_already_taken_is_an_error(stack: Stack) -> None:
    porty = stack.service("porty")
    kept = task_ids(porty)
    outcome, = run(scale(stack.executor("porty"), 2))
    assert not outcome.ok
    assert "no suitable node" in outcome.message and "port" in outcome.message
    assert task_ids(porty) == kept  # the running one keeps running
    run(scale(stack.executor("porty"), 1))


def test_timeout_while_tasks_never_become_healthy_and_healthy_ones_count(stack: Stack) -> None:
    sick, = run(scale(stack.executor("sick", scale_timeout=6.0), 1))
    assert not sick.ok
    assert "not done after 6s: 0/1 running" in sick.message and "starting" in sick.message
    run(scale(stack.executor("sick"), 0))
    healthy, = run(scale(stack.executor("healthy"), 2))
    assert healthy.ok, healthy.message
    run(scale(stack.executor("healthy"), 0))
