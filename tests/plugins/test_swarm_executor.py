"""The Swarm executor against a real engine turned into a single-node swarm by the tests.

One stack per module (``STACK`` below, deployed with ``docker stack deploy``), with a service per
behaviour; each test scales its own service and reads the outcome through the Engine API
(``tests/support/swarm_peers.py``), not from the executor. The engine supports host-mode publishing only,
so the one service that publishes a port does it in ``mode: host``.

The scripted stand-in engine (``FakeWorkerEngine``) exists only for what this single-node swarm
cannot show on demand: a worker node.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socketserver
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from docktor.tools.executors.swarm import SwarmExecutor, SwarmSettings, service_name
from docktor.tools.sdk import Context, ExecutorError
from tests.support.peers import free_port
from tests.support.swarm_peers import (
    client,
    deploy_stack,
    make_tls_material,
    remove_stack,
    replicas_spec,
    running_tasks,
    service_tasks,
    swarm_session,
    tls_engine,
    unique_stack,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(300)]

DOCKTOR = Path(sys.executable).with_name("docktor")

# On SIGTERM it writes a marker into a bind-mounted folder after "finishing its batch", then exits.
WORKER = textwrap.dedent(
    """
    import os, signal, socket, sys, time
    def bye(*_):
        time.sleep(0.3)
        open(f"/drained/{socket.gethostname()}", "w").write("drained")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    while True:
        time.sleep(0.2)
    """
)
# Exits at once on SIGTERM, as a worker should: stopping it (a scale-in, the stack's removal)
# waits for no grace period. IGNORES_SIGTERM is the PID 1 without a handler (``stubborn``).
SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nwhile True: time.sleep(1)"
IGNORES_SIGTERM = "import time\nwhile True: time.sleep(1)"

STACK = """
version: "3.8"
services:
  worker:
    image: python:3.12-slim
    command: ["python", "-c", {worker}]
    stop_grace_period: 5s
    volumes:
      - {drained}:/drained
    deploy:
      replicas: 1
  other:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    deploy:
      replicas: 2
  stubborn:        # PID 1 without a handler ignores SIGTERM: killed after the grace period
    image: python:3.12-slim
    command: ["python", "-c", {ignores_sigterm}]
    stop_grace_period: 1s
    deploy:
      replicas: 2
  broken:
    image: docktor-test/no-such-image:never
    deploy:
      replicas: 0
  crasher:
    image: python:3.12-slim
    command: ["python", "-c", "raise SystemExit(3)"]
    deploy:
      replicas: 0
  picky:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    deploy:
      replicas: 0
      placement:
        constraints: ["node.labels.docktor-test-never == yes"]
  porty:           # one host port on a one-node swarm: a second task has nowhere to go
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    ports:
      - {{target: 8080, published: {port}, mode: host}}
    deploy:
      replicas: 1
  healthy:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    healthcheck:
      test: ["CMD", "python", "-c", "pass"]
      interval: 1s
    deploy:
      replicas: 0
  sick:            # the first probe is due after 60 s: "starting" for the whole test
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    healthcheck:
      test: ["CMD", "python", "-c", "raise SystemExit(1)"]
      interval: 60s
    deploy:
      replicas: 0
  everywhere:
    image: python:3.12-slim
    command: ["python", "-c", {sleeper}]
    deploy:
      mode: global
"""


@dataclass
class Stack:
    name: str
    file: Path
    drained: Path
    tmp: Path

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def executor(self, short: str, **settings: Any) -> SwarmExecutor:
        s = SwarmSettings.model_validate({"kind": "swarm", "stack": self.name, "service": short, "scale_timeout": 30.0, **settings})
        return SwarmExecutor(s, Context(short, self.tmp, self.tmp / "state"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with swarm_session():
        tmp = tmp_path_factory.mktemp("swarm")
        drained = tmp / "drained"
        drained.mkdir()
        file = tmp / "stack.yaml"
        file.write_text(STACK.format(worker=json.dumps(WORKER), sleeper=json.dumps(SLEEPER), ignores_sigterm=json.dumps(IGNORES_SIGTERM),
                                 drained=drained, port=free_port()))
        s = Stack(unique_stack(), file, drained, tmp)
        try:
            deploy_stack(s.name, file)
            wait_until("the stack's services to run", lambda: len(running_tasks(s.service("other"))) == 2
                     and len(running_tasks(s.service("worker"))) == 1 and len(running_tasks(s.service("stubborn"))) == 2
                     and len(running_tasks(s.service("porty"))) == 1, timeout=120, every=0.5)
            yield s
        finally:
            remove_stack(s.name)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def scale(ex: SwarmExecutor, *counts: int) -> list[Any]:
    try:
        return [await ex.scale(n) for n in counts]
    finally:
        await ex.close()


async def status(ex: SwarmExecutor) -> Any:
    try:
        return await ex.status()
    finally:
        await ex.close()


def task_ids(service: str) -> set[str]:
    return {t["ID"] for t in running_tasks(service)}


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


# --------------------------------------------------------------------------- refusals and settings


def test_a_global_service_is_refused_at_check_status_and_scale(stack: Stack) -> None:
    settings = SwarmSettings(kind="swarm", stack=stack.name, service="everywhere")
    context = Context("everywhere", stack.tmp, stack.tmp / "state")
    with pytest.raises(ExecutorError, match="is in global mode: Docktor scales replicated services only"):
        SwarmExecutor.check(settings, context)
    with pytest.raises(ExecutorError, match="global mode"):
        run(status(stack.executor("everywhere")))
    outcome, = run(scale(stack.executor("everywhere"), 3))
    assert not outcome.ok and "global mode" in outcome.message


def test_validate_and_daemon_start_refuse_a_global_service_with_one_line(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(f"services:\n  - name: everywhere\n    executor: swarm\n    stack: {stack.name}\n    policy: rules\n")
    for args in (["validate"], ["daemon", "start", "--foreground"]):
        done = subprocess.run([str(DOCKTOR), *args, "--config", str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: services[0]: Swarm service '{stack.name}_everywhere' is in global mode: Docktor "
                          "scales replicated services only (`deploy: {mode: replicated}`); a global service runs one task "
                          "per node by design"], done.stderr
        assert "Traceback" not in done.stderr


def test_validate_warns_about_a_service_not_deployed_yet(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(f"services:\n  - name: later\n    executor: swarm\n    stack: {stack.name}\n    policy: rules\n")
    done = subprocess.run([str(DOCKTOR), "validate", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"no Swarm service '{stack.name}_later' yet" in done.stderr
    # the plugin's one-line description knows its settings only (the stack); the warning above names the service
    assert f"later: swarm stack {stack.name} executor" in done.stdout


def test_service_names_follow_docker_stack_deploy() -> None:
    assert service_name(SwarmSettings(kind="swarm"), "consumer") == "consumer"
    assert service_name(SwarmSettings(kind="swarm", service="shop_consumer"), "x") == "shop_consumer"
    assert service_name(SwarmSettings(kind="swarm", stack="shop"), "consumer") == "shop_consumer"
    assert service_name(SwarmSettings(kind="swarm", stack="shop", service="worker"), "x") == "shop_worker"


# --------------------------------------------------------------------------- the engine Docktor talks to


def test_docker_host_over_ssh_reaches_the_manager_through_the_ssh_binary(stack: Stack, tmp_path: Path) -> None:
    """``ssh://`` goes through the system's ``ssh`` (as the docker CLI does). No sshd here: a
    stand-in ``ssh`` runs the remote command locally, against the real engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh.log"
    fake = bin_dir / "ssh"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        # stand-in for an ssh client: record the arguments, run the remote command here
        echo "$@" >> {log}
        while [ "$1" != "--" ]; do shift; done
        shift; shift
        DOCKER_HOST={os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")} exec sh -c "$*"
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"DOCKER_HOST": "ssh://docktor@manager.example:2222", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    code = (
        "import asyncio, sys\n"
        "from docktor.tools.executors.swarm import SwarmExecutor, SwarmSettings\n"
        "from docktor.tools.sdk import Context\n"
        "from pathlib import Path\n"
        f"ex = SwarmExecutor(SwarmSettings(kind='swarm', stack='{stack.name}', service='other'), Context('other', Path('.'), Path('.')))\n"
        "async def main():\n"
        "    try:\n        s = await ex.status()\n    finally:\n        await ex.close()\n"
        "    print(s.desired, s.running)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2"]
    assert "-l docktor -p 2222 -- manager.example docker system dial-stdio" in log.read_text()


def test_docker_host_over_tls_with_client_certificates(stack: Stack, tmp_path: Path) -> None:
    """``tcp://`` with ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``, as the docker SDK reads them, to
    a TLS stand-in that relays to the real engine (which cannot be restarted with TLS here)."""
    client_dir, server_dir = make_tls_material(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _ = make_tls_material(tmp_path / "other")
    code = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from docktor.tools.executors.swarm import SwarmExecutor, SwarmSettings\n"
        "from docktor.tools.sdk import Context, ExecutorError\n"
        f"ex = SwarmExecutor(SwarmSettings(kind='swarm', stack='{stack.name}', service='other'), Context('other', Path('.'), Path('.')))\n"
        "async def main():\n"
        "    try:\n        s = await ex.status()\n        print(s.desired, s.running)\n"
        "    except ExecutorError as e:\n        print('error:', e)\n"
        "    finally:\n        await ex.close()\n"
        "asyncio.run(main())\n"
    )
    with tls_engine(server_dir) as url:
        def status_with(cert_path: Path) -> str:
            env = {**os.environ, "DOCKER_HOST": url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_path)}
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        assert status_with(client_dir).split() == ["2", "2"]
        # a client whose CA did not sign the server's certificate refuses it: one line, no traceback
        refused = status_with(other_ca)
        assert refused.startswith("error: Docker engine") and "CERTIFICATE_VERIFY_FAILED" in refused, refused


class FakeWorkerEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Scripted stand-in: an engine that says it is a Swarm *worker* node (a real one needs a
    second machine). It answers the version probe, /info, and 503 to service calls as Docker does."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def address_string(self) -> str:
                return "fake-engine"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/version"):
                    body: Any = {"ApiVersion": "1.41", "Version": "20.10.24", "MinAPIVersion": "1.12"}
                    code = 200
                elif self.path.endswith("/info"):
                    body = {"Swarm": {"NodeID": "w1", "LocalNodeState": "active", "ControlAvailable": False}}
                    code = 200
                else:
                    body = {"message": "This node is not a swarm manager. Worker nodes can't be used to view or modify "
                                       "cluster state. Please run this command on a manager node or promote the current "
                                       "node to a manager."}
                    code = 503
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(path, Handler)


@pytest.fixture
def worker_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = str(tmp_path / "worker.sock")
    server = FakeWorkerEngine(path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def test_a_worker_node_gives_a_clear_error_scripted_engine(worker_engine: str, tmp_path: Path) -> None:
    settings = SwarmSettings(kind="swarm", service="shop_consumer")
    context = Context("consumer", tmp_path, tmp_path / "state")
    with pytest.raises(ExecutorError, match="is a Swarm worker node: Docktor needs a manager"):
        SwarmExecutor.check(settings, context)
    ex = SwarmExecutor(settings, context)
    with pytest.raises(ExecutorError, match="is a Swarm worker node"):
        run(status(ex))
    outcome, = run(scale(SwarmExecutor(settings, context), 2))
    assert not outcome.ok and "worker node" in outcome.message


def test_an_unreachable_engine_is_a_warning_at_check_and_an_error_at_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    settings = SwarmSettings(kind="swarm", service="shop_consumer")
    context = Context("consumer", tmp_path, tmp_path / "state")
    warnings = SwarmExecutor.check(settings, context)
    assert len(warnings) == 1 and warnings[0].startswith("cannot check Swarm service 'shop_consumer'")
    with pytest.raises(ExecutorError, match="Docker engine"):
        run(status(SwarmExecutor(settings, context)))


# --------------------------------------------------------------------------- with the daemon


def daemon_config(stack: Stack, tmp: Path, service: str, **keys: Any) -> Path:
    doc = {
        "state_dir": str(tmp / "state"),
        "services": [{
            "name": service, "executor": "swarm", "stack": stack.name, "policy": "rules",
            "check_interval": "1s", "cooldown_up": "0s", **keys,
        }],
    }
    path = tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_daemon(config: Path, *args: str, until: Any, timeout: float = 90) -> list[dict[str, Any]]:
    decisions = config.parent / "state" / "decisions.jsonl"
    proc = subprocess.Popen([str(DOCKTOR), "daemon", "start", "--config", str(config), "--foreground", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def records() -> list[dict[str, Any]]:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "daemon exited"
            return [json.loads(x) for x in decisions.read_text().splitlines()] if decisions.exists() else []

        return wait_until("the daemon's decisions", lambda: (r := records()) and until(r) and r, timeout=timeout, every=0.5)
    finally:
        proc.terminate()
        proc.wait(60)


def test_daemon_backs_off_a_failing_image_instead_of_scaling_into_it(stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    # a rule that always asks for more, as a backlog would: only the back-off can hold it
    always_up = {"scale_up_when": [{"metric": "replicas.desired", "op": ">=", "value": 0}]}
    records = run_daemon(daemon_config(stack, tmp_path, "broken", min_replicas=0, max_replicas=3, rules=always_up),
                         until=lambda r: len(r) >= 10 and time.monotonic() - started > 8)
    attempts = [r for r in records if r["executed"]]
    assert len(attempts) == 1, [r["outcome"] for r in attempts]
    outcome = attempts[0]["outcome"]
    assert outcome["status"] == "error" and "No such image" in outcome["message"] and outcome["retry_at"]
    held = [r for r in records[records.index(attempts[0]) + 1:] if any(g["name"] == "backoff" for g in r["guardrails"])]
    assert held, "no later decision was held back by the back-off"
    run(scale(stack.executor("broken"), 0))


def test_advisory_mode_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    other = stack.service("other")
    before = task_ids(other)
    records = run_daemon(daemon_config(stack, tmp_path, "other", min_replicas=4, max_replicas=6), "--advisory",
                         until=lambda r: sum(1 for x in r if x["decision"] == "scale_up") >= 3)
    ups = [r for r in records if r["decision"] == "scale_up"]
    assert all(r["mode"] == "advisory" and r["executed"] is False and r["outcome"] is None for r in records)
    assert all(r["current_replicas"] == 2 and r["target_replicas"] == 4 for r in ups)
    assert replicas_spec(other) == 2 and task_ids(other) == before
    assert all(t["DesiredState"] == "running" for t in service_tasks(other) if t["ID"] in before)
