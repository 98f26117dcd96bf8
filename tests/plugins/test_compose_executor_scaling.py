"""The Compose executor scaling against a real Docker engine and Compose v2: up and in (the highest
numbers, or the idlest replica), SIGTERM and the drain, the grace period, zero and back, a container
that is not a replica, validate's warnings; and what a failed scale reports (an image that cannot be
pulled, restart loops, a replica exiting after start, replicas never healthy).

Each test owns a throwaway project under a unique name and always tears it down
(tests/support/compose_executor_setup.py). Status, a missing engine or CLI, and the configuration:
test_compose_executor_status.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.compose_executor_setup import *  # noqa: F403  (fixtures, found by name: project)
from tests.support.compose_executor_setup import Project, make_executor, run, scale_and_close
from tests.support.peers import compose, containers, down, numbers

# --------------------------------------------------------------------------- scaling


@pytest.mark.docker
def test_scale_up_then_in_removes_highest_numbers_and_leaves_other_service_alone(project: Project) -> None:
    compose(project.name, project.file, "up", "-d", "other")
    other_before = {c.id: c.attrs["State"]["StartedAt"] for c in containers(project.name, "other")}
    assert len(other_before) == 2

    async def scenario():
        ex = project.executor("worker")
        try:
            up = await ex.scale(4)
            status_up = await ex.status()
            down_ = await ex.scale(2)
            status_down = await ex.status()
            return up, status_up, down_, status_down
        finally:
            await ex.close()

    up, status_up, down_, status_down = run(scenario())
    assert up.ok, up.message
    assert up.running == 4
    assert (status_up.desired, status_up.running, status_up.failed) == (4, 4, 0)

    assert down_.ok, down_.message
    assert down_.running == 2
    assert numbers(project.name, "worker") == [1, 2]  # 3 and 4 went, the lowest stayed
    assert len(containers(project.name, "worker")) == 2  # removed, not just stopped
    assert (status_down.desired, status_down.running) == (2, 2)
    assert "3" in down_.message and "4" in down_.message

    other_after = {c.id: c.attrs["State"]["StartedAt"] for c in containers(project.name, "other")}
    assert other_after == other_before  # same containers, never restarted


@pytest.mark.docker
def test_scale_in_sends_sigterm_and_waits_for_the_worker_to_drain(project: Project) -> None:
    async def scenario():
        ex = project.executor("worker")
        try:
            assert (await ex.scale(3)).ok
            victims = [c.attrs["Config"]["Hostname"] for c in containers(project.name, "worker")[1:]]
            outcome = await ex.scale(1)
            return victims, outcome
        finally:
            await ex.close()

    victims, outcome = run(scenario())
    assert outcome.ok, outcome.message
    assert sorted(p.name for p in project.drained.iterdir()) == sorted(victims)
    assert numbers(project.name, "worker") == [1]
    assert [r.replica for r in outcome.removed] == ["3", "2"]
    assert all(r.stopped.startswith("exited with code 0 ") and r.stopped.endswith("s after SIGTERM") for r in outcome.removed)


@pytest.mark.docker
def test_scale_in_removes_the_idlest_replica_not_the_busy_highest_number(project: Project) -> None:
    async def scenario():
        ex = project.executor("worker")
        try:
            assert (await ex.scale(3)).ok
            busy = containers(project.name, "worker")[2]  # number 3, which used to go first
            exec_id = busy.client.api.exec_create(busy.id, ["python", "-c", "while True: pass"])["Id"]
            busy.client.api.exec_start(exec_id, detach=True)
            for _ in range(60):  # CPU figures need two background readings per container
                status = await ex.status()
                if status.metrics.get("cpu.max", 0) > 20 and len(ex._stats.cpu_by_container()) == 3:
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"no CPU figures for every replica: {status.metrics}")
            return await ex.scale(2)
        finally:
            await ex.close()

    outcome = run(scenario())
    assert outcome.ok, outcome.message
    assert numbers(project.name, "worker") == [1, 3]
    assert [r.replica for r in outcome.removed] == ["2"]
    assert outcome.removed[0].why.startswith("lowest CPU: ") and "3: " in outcome.removed[0].why


@pytest.mark.docker
def test_replica_that_ignores_sigterm_is_killed_after_the_grace_and_the_record_says_so(project: Project) -> None:
    async def scenario():
        ex = project.executor("stubborn")
        try:
            assert (await ex.scale(2)).ok
            return await ex.scale(1)
        finally:
            await ex.close()

    outcome = run(scenario())
    assert outcome.ok, outcome.message
    assert [(r.replica, r.stopped) for r in outcome.removed] == [("2", "ignored SIGTERM for 1 s: SIGKILL")]
    assert numbers(project.name, "stubborn") == [1]


@pytest.mark.docker
def test_scale_to_zero_and_back(project: Project) -> None:
    async def scenario():
        ex = project.executor("worker")
        try:
            return await ex.scale(1), await ex.scale(0), await ex.status(), await ex.scale(1)
        finally:
            await ex.close()

    one, zero, status, again = run(scenario())
    assert one.ok and zero.ok and again.ok, (one, zero, again)
    assert (status.desired, status.running) == (0, 0)
    assert numbers(project.name, "worker") == [1]


@pytest.mark.docker
def test_a_container_run_from_an_image_compose_built_is_not_a_replica(project: Project, tmp_path: Path) -> None:
    """An image Compose builds carries the project's and service's labels, so a container started
    from it outside Compose (``docker run``, a Swarm task) inherits them. Seen in the end-to-end
    tests: another test's Swarm tasks running the example's consumer image were counted as this
    project's consumers, and scaled in. Like Compose, only containers Compose created count."""
    import docker

    context = tmp_path / "built"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM python:3.12-slim\n")
    tag = f"docktor-test/built-{project.name}:1"
    file = tmp_path / "built.yaml"
    file.write_text(f"services:\n  worker:\n    build: {context}\n    image: {tag}\n"
                    "    command: [\"python\", \"-c\", \"import time\\nwhile True: time.sleep(1)\"]\n")
    client = docker.from_env(timeout=30)
    outsider = None
    try:
        compose(project.name, file, "up", "-d", "--build", "worker")
        image_labels = client.images.get(tag).labels
        assert image_labels["com.docker.compose.project"] == project.name  # what every container of it inherits
        replica = containers(project.name, "worker")[0]
        created = docker_time(client.api.inspect_container(replica.id)["Created"])
        while time.time() < created + 1.5:  # the engine lists creation times in whole seconds
            time.sleep(0.1)
        outsider = client.containers.run(tag, ["python", "-c", "import time\nwhile True: time.sleep(1)"], detach=True)
        assert outsider.labels["com.docker.compose.service"] == "worker"

        async def scenario():
            ex = make_executor(file, project.name, "worker", collect_metrics=False)
            try:
                return await ex.status(), await ex.last_scaled(), await ex.scale(0), await ex.status()
            finally:
                await ex.close()

        before, last, zero, after = run(scenario())
        assert (before.desired, before.running) == (1, 1)
        assert last is not None and int(last.at) == int(created)  # the replica's creation, not the outsider's
        assert zero.ok and (after.desired, after.running) == (0, 0)
        outsider.reload()
        assert outsider.status == "running"  # never scaled in: not one of the service's replicas
    finally:
        if outsider is not None:
            outsider.remove(force=True)
        down(project.name, file)
        client.images.remove(tag, force=True)


def docker_time(text: str) -> float:
    from docktor.agent.timestamps import parse_rfc3339

    return parse_rfc3339(text[:26].rstrip("Z") + "Z")


@pytest.mark.docker
def test_validate_warns_about_what_the_engine_says_and_never_fails_without_one(project: Project, tmp_path: Path) -> None:
    """Offline checks say the file and the service are right; only the engine can say the stack
    is not up (or was started under another project name). Warnings, never a refusal."""
    import os
    import subprocess
    import sys

    config = tmp_path / "docktor.yaml"
    config.write_text(f"compose_file: {project.file}\nservices:\n  - name: worker\n    project: {project.name}\n    policy: rules\n")

    def validate(**env: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "validate", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return [line for line in done.stderr.splitlines() if project.name in line or "Docker engine" in line]

    up = f"docker compose -p {project.name} -f {project.file} up -d"
    assert validate() == [f"warning: worker: executor: project '{project.name}' has no containers on the Docker engine at "
                          f"{os.environ.get('DOCKER_HOST') or 'the default socket'} yet: start the stack ({up}), "
                          "or set project: to the name it was started under"]
    compose(project.name, project.file, "up", "-d", "other")
    assert validate() == [f"warning: worker: executor: service 'worker' of project '{project.name}' has no running container "
                          f"(to start it: {up} worker)"]
    compose(project.name, project.file, "up", "-d", "worker")
    compose(project.name, project.file, "stop", "worker")
    assert "(1 stopped)" in validate()[0]
    compose(project.name, project.file, "start", "worker")
    assert validate() == []
    nowhere = f"unix://{tmp_path}/no-engine.sock"
    assert validate(DOCKER_HOST=nowhere) == [f"warning: worker: executor: cannot check project '{project.name}': "
                                             f"no Docker engine answers at {nowhere}"]


# --------------------------------------------------------------------------- failures


@pytest.mark.docker
def test_image_that_cannot_be_pulled_is_an_error_with_the_reason(project: Project) -> None:
    outcome = run(scale_and_close(project.executor("broken"), 2))
    assert not outcome.ok
    assert "cannot be pulled" in outcome.message
    assert "no-such-image" in outcome.message or "registry" in outcome.message or "denied" in outcome.message
    assert outcome.running == 0
    assert containers(project.name, "broken", all=False) == []


@pytest.mark.docker
def test_restart_looping_replicas_are_an_error(project: Project) -> None:
    outcome = run(scale_and_close(project.executor("crasher"), 2))
    assert not outcome.ok
    assert "restart-looping" in outcome.message
    assert "exit code 3" in outcome.message
    assert (outcome.running or 0) < 2
    # up again at an instant, a container's own ExitCode is 0: the engine's die events keep the 3
    ex = project.executor("crasher")
    ids = [r.id for r in run(ex.replicas())]
    assert ids and set(ex._exit_codes_sync(ids, time.time() - 120).values()) == {3}


def test_a_restart_loop_names_the_last_exit_code_even_while_the_replica_is_up_again() -> None:
    from docktor.tools.executors.compose_replicas import RESTART_LOOP_COUNT, Replica

    up_again = Replica(id="c1", name="w-1", number=1, state="running", exit_code=0, health=None, health_output="",
                       restart_count=RESTART_LOOP_COUNT, oom_killed=False, stop_timeout=None, stop_signal="SIGTERM",
                       memory_limit=0)
    assert up_again.problem(restarts_since=0, last_exit=3) == (
        f"replica 1 is restart-looping ({RESTART_LOOP_COUNT} restarts, last exit code 3)")
    assert up_again.problem(restarts_since=RESTART_LOOP_COUNT, last_exit=3) is None  # no restart since the scale began
    waiting = Replica(**{**up_again.__dict__, "state": "restarting", "exit_code": 3})
    assert "last exit code 3" in (waiting.problem(restarts_since=None, last_exit=None) or "")


@pytest.mark.docker
def test_replica_that_exits_after_starting_is_an_error(project: Project) -> None:
    # it is "running" when Compose returns and exits half a second later
    outcome = run(scale_and_close(project.executor("exiter"), 1))
    assert not outcome.ok
    assert "exited with code 4" in outcome.message

    async def status():
        ex = project.executor("exiter")
        try:
            return await ex.status()
        finally:
            await ex.close()

    st = run(status())
    assert (st.desired, st.running, st.failed) == (1, 0, 1)
    assert "exited with code 4" in st.detail


@pytest.mark.docker
def test_timeout_when_replicas_never_become_healthy(project: Project) -> None:
    # running, but never healthy within scale_timeout
    outcome = run(scale_and_close(project.executor("sick", scale_timeout=4.0), 1))
    assert not outcome.ok
    assert "not done after 4s" in outcome.message
    assert "0/1 running and healthy" in outcome.message
    assert "starting" in outcome.message
