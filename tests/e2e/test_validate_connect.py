"""``docktor validate`` catches what will fail: offline facts of this machine are errors (exit 2),
every problem in one round, and ``--connect`` asks the real systems (NATS, RabbitMQ) what only
they can tell. Each case was ``ok`` (exit 0) before."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import docktor
from tests.support.hostile_yaml import billion_laughs
from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer
from tests.support.servers import RabbitMQ
from tests.support.waiting import wait_until

PYTHON = sys.executable
SLEEPER = f'["{PYTHON}", "-c", "import time; time.sleep(60)"]'


def config(tmp_path: Path, service: str) -> Path:
    path = tmp_path / "docktor.yaml"
    path.write_text(f"services:\n{service}", encoding="utf-8")
    return path


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# --------------------------------------------------------------------------- offline facts


def test_a_program_that_does_not_exist_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    cfg = config(tmp_path, """
  - name: worker
    executor: local
    command: pyhton worker.py
    policy: rules
""")
    done = docktor("validate", "--config", str(cfg))
    assert done.returncode == 2, done.stdout + done.stderr
    assert errors(done.stderr) == [
        "error: services[0]: command: program 'pyhton' not found on the replicas' PATH (did you mean 'python'?)"
    ]
    assert "Traceback" not in done.stderr


def test_a_relative_program_is_looked_for_in_the_working_dir(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    cfg = config(tmp_path, """
  - name: worker
    executor: local
    command: ./run-worker.sh
    working_dir: work
    policy: rules
""")
    done = docktor("validate", "--config", str(cfg))
    assert done.returncode == 2
    assert errors(done.stderr) == [f"error: services[0]: command: './run-worker.sh' does not exist (from {tmp_path / 'work'})"]
    script = tmp_path / "work" / "run-worker.sh"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    ok = docktor("validate", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("ok: 1 service(s)")


def test_a_missing_compose_file_and_a_missing_service_are_errors(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web: {image: nginx:alpine}\n  worker: {image: python:3.12-slim}\n")
    cfg = config(tmp_path, """
  - name: consumer
    compose_file: compose.yaml
    policy: rules
  - name: other
    compose_file: absent.yaml
    policy: rules
""")
    done = docktor("validate", "--config", str(cfg))
    assert done.returncode == 2
    found = errors(done.stderr)
    assert f"error: services[0]: compose_file '{tmp_path / 'compose.yaml'}' has no service 'consumer' (it has: web, worker)" in found
    assert f"error: services[1]: compose_file '{tmp_path / 'absent.yaml'}' does not exist" in found
    assert len(found) == 2, found


def test_a_compose_file_that_is_an_alias_bomb_is_an_error_not_a_hang(tmp_path: Path) -> None:
    # the Compose file is read with the same bounds as docktor.yaml: a few hundred bytes that
    # would expand to 387 million values are refused, not built
    (tmp_path / "compose.yaml").write_text(billion_laughs())
    cfg = config(tmp_path, """
  - name: consumer
    compose_file: compose.yaml
    policy: rules
""")
    done = docktor("validate", "--config", str(cfg))
    assert done.returncode == 2, done.stderr
    assert errors(done.stderr) == [f"error: services[0]: compose_file '{tmp_path / 'compose.yaml'}' cannot be read as YAML: "
                                   "anchors and aliases expand to more than 100,000 values (an alias bomb?); write the values out"]
    assert "Traceback" not in done.stderr


def test_an_unset_password_variable_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"""
  - name: worker
    executor: local
    command: {SLEEPER}
    queue: {{kind: rabbitmq, url: "http://127.0.0.1:15672", queue: jobs, username_env: RMQ_USER, password_env: RMQ_PASSWORD}}
    policy: rules
""")
    done = docktor("validate", "--config", str(cfg), env={"RMQ_USER": "guest", "RMQ_PASSWORD": None})
    assert done.returncode == 2
    assert errors(done.stderr) == ["error: services[0].queue.password_env: environment variable RMQ_PASSWORD is not set"]
    # daemon start does not refuse it (the other services run; each tick's record says it): a warning
    assert docktor("validate", "--config", str(cfg), env={"RMQ_USER": "guest", "RMQ_PASSWORD": "x"}).returncode == 0


def test_every_problem_in_one_round(tmp_path: Path) -> None:
    """A key typo used to hide a mistyped metric until it was fixed."""
    cfg = config(tmp_path, f"""
  - name: worker
    executor: local
    command: {SLEEPER}
    max_replica: 4
    queue: {{kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}}
    policy: rules
    rules:
      scale_up_when: [{{metric: queue.backlogg, op: ">", value: 10}}]
""")
    done = docktor("validate", "--config", str(cfg))
    assert done.returncode == 2
    found = errors(done.stderr)
    assert any(line.startswith("error: services[0].max_replica:") and "max_replicas" in line for line in found), found
    metric = [line for line in found if line.startswith("error: services[0].rules.scale_up_when[0].metric:")]
    assert len(metric) == 1 and "did you mean 'queue.backlog'" in metric[0], found


# --------------------------------------------------------------------------- --connect


def test_connect_names_the_stream_there_is(tmp_path: Path, nats_server: NatsServer) -> None:
    import asyncio

    asyncio.run(make_stream(nats_server.url, 3, name="ORDERS"))
    service = f"""
  - name: worker
    executor: local
    command: {SLEEPER}
    queue: {{kind: nats, url: "{nats_server.url}", stream: STREAM, consumer: WORKERS, timeout: 2s}}
    policy: rules
"""
    cfg = config(tmp_path, service.replace("STREAM", "ORDER"))
    offline = docktor("validate", "--config", str(cfg))
    assert offline.returncode == 0, offline.stderr  # only the server can tell
    done = docktor("validate", "--connect", "--config", str(cfg))
    assert done.returncode == 2, done.stdout + done.stderr
    assert errors(done.stderr) == [
        "error: services[0].queue: nats ORDER/WORKERS: stream 'ORDER' not found (streams: ORDERS)"
    ]
    good = docktor("validate", "--connect", "--config", str(config(tmp_path, service.replace("STREAM", "ORDERS"))))
    assert good.returncode == 0, good.stderr
    read = [line for line in good.stdout.splitlines() if line.startswith("worker: queue: ")]
    assert len(read) == 1 and "queue.backlog=3" in read[0], good.stdout
    assert good.stdout.splitlines()[-1].endswith("every source and executor answered")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    b = RabbitMQ.start(tmp_path_factory.mktemp("rabbit"))
    try:
        b.api("PUT", "queues/%2F/jobs", json.dumps({"durable": True}).encode())
        wait_until("the broker's first statistics of the queue", lambda: "messages" in b.api("GET", "queues/%2F/jobs"), 30)  # type: ignore[operator]
        yield b
    finally:
        b.stop()


def rabbit_config(tmp_path: Path, url: str) -> Path:
    return config(tmp_path, f"""
  - name: worker
    executor: local
    command: {SLEEPER}
    queue: {{kind: rabbitmq, url: "{url}", queue: jobs, username_env: RMQ_USER, password_env: RMQ_PASSWORD, timeout: 2s}}
    policy: rules
""")


def test_connect_says_which_user_the_broker_refused(tmp_path: Path, broker: RabbitMQ) -> None:
    cfg = rabbit_config(tmp_path, broker.url)
    done = docktor("validate", "--connect", "--config", str(cfg), env={"RMQ_USER": "guest", "RMQ_PASSWORD": "wrong-pw-77"})
    assert done.returncode == 2
    assert errors(done.stderr) == [
        "error: services[0].queue: rabbitmq queue jobs in vhost / (management API): "
        f"management API at {broker.url} refused the user in "
        "RMQ_USER: HTTP 401"
    ]
    assert "wrong-pw-77" not in done.stdout + done.stderr
    ok = docktor("validate", "--connect", "--config", str(cfg), env={"RMQ_USER": "guest", "RMQ_PASSWORD": "guest"})
    assert ok.returncode == 0, ok.stderr
    assert any(line.startswith("worker: queue: ") and "queue.backlog=0" in line for line in ok.stdout.splitlines()), ok.stdout


def test_connect_recognises_the_amqp_port(tmp_path: Path, broker: RabbitMQ) -> None:
    url = f"http://127.0.0.1:{broker.amqp_port}"
    done = docktor("validate", "--connect", "--config", str(rabbit_config(tmp_path, url)),
                   env={"RMQ_USER": "guest", "RMQ_PASSWORD": "guest"})
    assert done.returncode == 2
    found = errors(done.stderr)
    assert len(found) == 1 and f"{url} answered AMQP, not HTTP: is this the AMQP port?" in found[0], found


def test_connect_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    """A peer that accepts and never answers: the probe ends with the source's own time-out, not a hang."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        cfg = rabbit_config(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
        done = docktor("validate", "--connect", "--timeout", "1s", "--config", str(cfg),
                       env={"RMQ_USER": "guest", "RMQ_PASSWORD": "guest"}, timeout=60)
    finally:
        stop.set()
        t.join()
        for s in held:
            s.close()
        silent.close()
    assert done.returncode == 2
    found = errors(done.stderr)
    assert len(found) == 1 and "timed out after 1s" in found[0], found


def test_connect_refuses_a_bad_timeout(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"  - name: worker\n    executor: local\n    command: {SLEEPER}\n    policy: rules\n")
    done = docktor("validate", "--connect", "--timeout", "soon", "--config", str(cfg))
    assert done.returncode == 2
    assert errors(done.stderr) == ["error: --timeout: 'soon' is not a duration (e.g. 5s, 500ms)"]


def test_daemon_status_shows_why_a_replica_cannot_start(tmp_path: Path) -> None:
    """Only ``explain`` used to say it; ``status`` showed ``0/1`` and "no rule matched"."""
    cfg = config(tmp_path, """
  - name: worker
    executor: local
    command: pyhton worker.py
    policy: rules
    check_interval: 0.5s
""")
    started = docktor("daemon", "start", "--config", str(cfg))
    assert started.returncode == 0, started.stderr
    assert "command: program 'pyhton' not found" in started.stderr  # validate's error, a warning here
    try:
        def shown() -> str | None:
            out = docktor("daemon", "status", "--config", str(cfg)).stdout
            return out if "command not found: pyhton" in out else None

        table = wait_until("status to show the failed start", shown, 60, every=0.5)
        row = next(line for line in table.splitlines() if "worker" in line)
        assert "0/1" in row and "replica 1: command not found: pyhton" in row, table
    finally:
        assert docktor("daemon", "stop", "--config", str(cfg)).returncode == 0
