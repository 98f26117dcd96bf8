"""The Compose executor's status against a real Docker engine and Compose v2 (CPU and memory of
running replicas, none running), without an engine or without the Compose CLI, and its
configuration (the default project name as Compose derives it, an executor made from a config).

Each test owns a throwaway project under a unique name and always tears it down
(tests/support/compose_executor_setup.py). Scaling and its failures: test_compose_executor_scaling.py."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from docktor.agent.config.load import load_config
from docktor.tools.executors.compose import ComposeExecutor, default_project, find_compose_cli
from docktor.tools.sdk import Context, ExecutorError
from tests.support.compose_executor_setup import *  # noqa: F403  (fixtures, found by name: project)
from tests.support.compose_executor_setup import Project, make_executor, run, scale_and_close
from tests.support.peers import DOCKER_SKIP_REASON, docker_ok, need

# --------------------------------------------------------------------------- metrics and status


@pytest.mark.docker
def test_status_reports_cpu_and_memory_of_running_replicas(project: Project) -> None:
    async def until_cpu(ex: ComposeExecutor):
        # figures are refreshed in the background; CPU needs two readings per container
        for _ in range(40):
            st = await ex.status()
            if "cpu.max" in st.metrics:
                return st
            await asyncio.sleep(0.5)
        raise AssertionError(f"no CPU figures from {ex}: {st.metrics}")

    async def scenario():
        idle, busy = project.executor("worker"), project.executor("burner")
        try:
            assert (await idle.scale(2)).ok
            assert (await busy.scale(1)).ok
            return await until_cpu(idle), await until_cpu(busy)
        finally:
            await idle.close()
            await busy.close()

    idle, busy = run(scenario())
    for st in (idle, busy):
        assert {"cpu.avg", "cpu.max", "mem.avg_mb", "mem.max_mb"} <= st.metrics.keys(), st.metrics
        assert 0 < st.metrics["mem.avg_mb"] <= st.metrics["mem.max_mb"] < 256
        assert 0 <= st.metrics["cpu.avg"] <= st.metrics["cpu.max"]
    # a busy loop uses a good part of a core; a sleeping worker almost nothing
    assert busy.metrics["cpu.max"] > 20
    assert idle.metrics["cpu.max"] < busy.metrics["cpu.max"]
    # percent of limit only where a limit is set (worker: mem_limit 256m; burner: none)
    assert 0 < idle.metrics["mem.avg_pct"] < 100
    assert "mem.avg_pct" not in busy.metrics


@pytest.mark.docker
def test_status_without_containers_is_zero_not_an_error(project: Project) -> None:
    async def scenario():
        ex = project.executor("worker")
        try:
            return await ex.status()
        finally:
            await ex.close()

    st = run(scenario())
    assert (st.desired, st.running, st.failed) == (0, 0, 0)
    assert st.metrics == {}


def test_unreachable_engine_raises_executor_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    ex = make_executor(tmp_path / "docker-compose.yaml", "nothing", "worker")

    async def scenario():
        try:
            await ex.status()
        finally:
            await ex.close()

    with pytest.raises(ExecutorError, match="Docker engine"):
        run(scenario())


def test_no_compose_cli_error_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: neither docker nor docker-compose
    with pytest.raises(ExecutorError) as err:
        find_compose_cli()
    assert "`docker compose`" in str(err.value)
    assert "`docker-compose`" in str(err.value)


def test_scale_without_compose_cli_is_an_error_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    outcome = run(scale_and_close(make_executor(tmp_path / "x.yaml", "nothing", "worker"), 2))
    assert not outcome.ok
    assert "no Docker Compose CLI found" in outcome.message


# --------------------------------------------------------------------------- configuration


@pytest.mark.docker
@pytest.mark.parametrize("folder", ["My Stack.v2", "-under_score"])
def test_default_project_matches_what_compose_derives(tmp_path: Path, folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    d = tmp_path / folder
    d.mkdir()
    f = d / "docker-compose.yaml"
    f.write_text("services:\n  a:\n    image: python:3.12-slim\n")
    import subprocess

    def compose_says() -> str:
        out = subprocess.run([*find_compose_cli(), "-f", str(f), "config", "--format", "json"],
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)["name"]

    assert default_project(f) == compose_says()
    f.write_text("name: Named-Project\nservices:\n  a:\n    image: python:3.12-slim\n")
    assert default_project(f) == compose_says() == "named-project"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "fromenv")
    assert default_project(f) == compose_says() == "fromenv"


def test_create_executor_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "docker-compose.yaml").write_text("services:\n  consumer:\n    image: x\n")
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(
        textwrap.dedent(
            """
            compose_file: stack/docker-compose.yaml
            services:
              - name: consumer
                policy: rules
              - name: workers
                policy: rules
                compose_service: consumer
                project: explicit
                stop_grace_period: 3s
                scale_timeout: 12s
            """
        )
    )
    config = load_config(cfg, env={})
    a, b = (
        ComposeExecutor(svc.executor.settings, Context(svc.name, config.base_dir, tmp_path / "state"))  # type: ignore[union-attr,arg-type]
        for svc in config.services
    )
    assert a.compose_file == (tmp_path / "stack" / "docker-compose.yaml").resolve()
    assert (a.project, a.service, a.stop_grace_period, a.scale_timeout) == ("stack", "consumer", None, 60.0)
    assert (b.project, b.service, b.stop_grace_period, b.scale_timeout) == ("explicit", "consumer", 3.0, 12.0)
