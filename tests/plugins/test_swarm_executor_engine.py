"""The Swarm executor's refusals, the engine it talks to, and the daemon driving it, against a real
engine turned into a single-node swarm by the tests: a global service refused, a service not deployed
yet, stack naming, ``DOCKER_HOST`` over SSH and over TLS with client certificates, an unreachable
engine, a daemon backing off a failing image, and advisory mode.

One stack per module (``STACK``, tests/support/swarm_stack.py). The scripted stand-in engine
(``FakeWorkerEngine``) exists only for what this single-node swarm cannot show on demand: a worker
node.

Scaling and its failures: test_swarm_executor_scaling.py."""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import pytest
import yaml

from docktor.tools.executors.swarm import SwarmExecutor, SwarmSettings, service_name
from docktor.tools.sdk import Context, ExecutorError
from tests.support.swarm_peers import (
    make_tls_material,
    replicas_spec,
    service_tasks,
    tls_engine,
)
from tests.support.swarm_stack import *  # noqa: F403  (fixtures, found by name: stack)
from tests.support.swarm_stack import Stack, run, scale, status, task_ids
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(300)]


DOCKTOR = Path(sys.executable).with_name("docktor")


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
