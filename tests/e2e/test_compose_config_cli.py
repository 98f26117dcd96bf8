"""The real CLI on a Compose file whose x-docktor blocks are the config: ``--compose``, the file
found by name when no option is given (and said on stderr), one ``error:`` line per problem naming
the Compose path, ``decide`` against a real nats-server and a daemon started from the Compose file.

No Docker engine is needed: ``DOCKER_HOST`` points at a socket that does not exist (a machine
without an engine), and the compose executor's failing status read is recorded, not fatal.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support.cli import docktor
from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def compose_yaml(url: str = "nats://127.0.0.1:9", *, max_replicas: int = 4, mode: str = "autonomous") -> str:
    return f"""
name: shop
x-docktor:
  mode: {mode}
  state_dir: .docktor
services:
  nats:
    image: nats:2.10
  worker:
    image: python:3.12-slim
    command: ["python", "worker.py"]
    x-docktor:
      min_replicas: 1
      max_replicas: {max_replicas}
      check_interval: 1s
      policy: rules
      queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
      rules:
        scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
        scale_down_when: [{{metric: queue.backlog, op: "<=", value: 10}}]
"""


def test_validate_compose_reads_the_x_docktor_blocks(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yaml").write_text(compose_yaml())
    r = docktor("validate", "--compose", "docker-compose.yaml", cwd=tmp_path, env=NO_ENGINE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == (
        "worker: compose executor, replicas 1-4, every 1s, policy rules, queue nats JOBS/WORKERS, rules 1 up / 1 down")
    assert r.stdout.splitlines()[-1] == f"ok: 1 service(s), mode autonomous, state in {tmp_path.resolve() / '.docktor'}"
    assert "using " not in r.stderr  # named on the command line: nothing to say
    # a model injected by Compose turns no advisor on by itself; validate says how to use it
    injected = docktor("validate", "--compose", "docker-compose.yaml", cwd=tmp_path,
                       env={**NO_ENGINE, "LLM_URL": "http://model-runner.docker.internal/engines/v1/"})
    assert "llm: none (LLM_URL is set, as Compose's models: sets it; llm: {from: compose} would use it)" in injected.stdout


def test_validate_errors_name_the_compose_path_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yaml").write_text(
        compose_yaml(max_replicas=0).replace("policy: rules", "policy: rules\n      min_replica: 1"))
    r = docktor("validate", "--compose", "docker-compose.yaml", cwd=tmp_path, env=NO_ENGINE)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: docker-compose.yaml: services.worker.x-docktor.max_replicas: Input should be greater than or equal to 1, got 0",
        "error: docker-compose.yaml: services.worker.x-docktor.min_replica: unknown key (did you mean 'min_replicas'?)",
    ]


def test_with_no_option_docktor_yaml_then_composes_own_names_and_says_which(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yaml").write_text(compose_yaml(max_replicas=3))
    r = docktor("validate", cwd=tmp_path, env=NO_ENGINE)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == "using docker-compose.yaml"
    assert "replicas 1-3" in r.stdout

    (tmp_path / "compose.yaml").write_text(compose_yaml(max_replicas=5))  # Compose's own first choice
    r = docktor("validate", cwd=tmp_path, env=NO_ENGINE)
    assert r.stderr.splitlines()[0] == "using compose.yaml (docker-compose.yaml not read)"
    assert "replicas 1-5" in r.stdout

    (tmp_path / "docktor.yaml").write_text("services:\n  - {name: own, command: sleep 60, policy: rules}\n")
    r = docktor("validate", cwd=tmp_path, env=NO_ENGINE)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == "using docktor.yaml (compose.yaml, docker-compose.yaml not read)"
    assert r.stdout.startswith("own: local executor")


def test_no_config_here_and_contradictory_options_are_one_line_exit_2(tmp_path: Path) -> None:
    r = docktor("validate", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"error: no docktor.yaml, compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml in {tmp_path}: "
        "give the file with --config (docktor.yaml) or --compose (a Compose file)"
    ]
    (tmp_path / "docktor.yaml").write_text("services:\n  - {name: own, command: sleep 60, policy: rules}\n")
    r = docktor("validate", "--compose", "docktor.yaml", cwd=tmp_path)
    assert (r.returncode, r.stderr.splitlines()) == (2, [
        "error: --compose: docktor.yaml is not a Compose file (its services: is not a mapping of services); "
        "for docktor.yaml use --config"])
    r = docktor("validate", "--compose", "a.yaml", "--config", "b.yaml", cwd=tmp_path)
    assert (r.returncode, r.stderr.splitlines()) == (2, ["error: --compose: give either --config or --compose, not both"])


def test_decide_once_dry_run_on_a_compose_file_reads_the_real_queue(tmp_path: Path, nats_server: NatsServer) -> None:
    asyncio.run(make_stream(nats_server.url, 700))
    (tmp_path / "compose.yaml").write_text(compose_yaml(nats_server.url))
    r = docktor("decide", "--once", "--dry-run", "--json", "--window", "0", cwd=tmp_path, env=NO_ENGINE)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == "using compose.yaml"
    (line,) = r.stdout.strip().splitlines()
    rec = json.loads(line)
    assert (rec["service"], rec["mode"], rec["executed"]) == ("worker", "dry-run", False)
    assert rec["observations"]["queue.backlog"] == 700.0  # the x-docktor queue, read for real
    # no engine here: the compose executor's status read fails, is recorded, and the decision holds
    assert rec["decision"] == "hold" and rec["reason"].startswith("replicas unknown (Docker engine: ")
    assert any(e.startswith("executor: Docker engine") for e in rec["errors"])
    logged = [json.loads(x) for x in (tmp_path / ".docktor" / "decisions.jsonl").read_text().splitlines()]
    assert logged[-1]["id"] == rec["id"]


def test_daemon_starts_from_the_compose_file_and_is_found_by_name(tmp_path: Path, nats_server: NatsServer) -> None:
    asyncio.run(make_stream(nats_server.url, 50))
    (tmp_path / "docker-compose.yaml").write_text(compose_yaml(nats_server.url, mode="advisory"))
    started = docktor("daemon", "start", "--compose", "docker-compose.yaml", cwd=tmp_path, env=NO_ENGINE)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("started docktor (pid ")
        status = docktor("daemon", "status", "--json", cwd=tmp_path, env=NO_ENGINE)  # found by name
        assert status.stderr.splitlines()[0] == "using docker-compose.yaml"
        st = json.loads(status.stdout)
        assert st["running"] is True and st["mode"] == "advisory" and list(st["services"]) == ["worker"]
    finally:
        stopped = docktor("daemon", "stop", "--compose", "docker-compose.yaml", cwd=tmp_path, env=NO_ENGINE)
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped docktor"), stopped.stderr
