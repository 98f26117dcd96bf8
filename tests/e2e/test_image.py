"""The image (the repository's Dockerfile) on the real engine: built from the repo once per run (a module fixture),
run the Compose way, beside the stack it scales.

A Compose project holds a JetStream broker, a ``worker`` service and Docktor's own container, its
config in the project's ``x-docktor`` blocks (its folder mounted read-only at /config), its state on
a named volume, the engine's socket mounted and its group added with ``group_add``. What is checked
comes from the engine and from the volume, not from Docktor's word: the container runs as a
non-root user, its HEALTHCHECK (the image's own command; only the timings are shortened here) turns
healthy once the daemon runs, the daemon reads the worker's replicas through the socket, and a
SIGTERM (``docker compose stop``) ends it with exit 0, the decision log on the volume whole.
Then examples/nats-multi with its ``autoscale`` profile (Docktor's own service in the example's
Compose file): under a burst it scales the consumer up through the socket and back down, the
decisions on the named volume, the web and producer services untouched.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from docktor.agent.runtime.log_reader import read_records
from tests.support.examples import nats_multi_backlog, publish_events
from tests.support.jetstream import make_stream
from tests.support.peers import (
    REPO,
    compose,
    containers,
    down,
    free_port,
    need,
    need_docker,
    unique_project,
    wait_for_consumer,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]

#: the user the Dockerfile creates (USER 10001:10001)
IMAGE_UID = 10001
#: a tag of this session's build (removed at the end); the classic builder caches its layers, so a
#: later session with unchanged dependencies rebuilds in seconds
TAG = unique_project("docktor-test/docktor:e2e")


def engine_socket() -> Path:
    """The engine's Unix socket on this machine (the image reaches the engine through it)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    url = urlparse(host)
    need(url.scheme == "unix", f"the image tests mount the engine's Unix socket; DOCKER_HOST is {host}", "DOCKTOR_REQUIRE_DOCKER")
    return Path(url.path)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built from the repository once for this module (all its tests share it)."""
    need_docker()
    import docker

    client = docker.from_env(timeout=1800)  # a first build installs every pinned wheel (minutes)
    try:
        built, _ = client.images.build(path=str(REPO), tag=TAG, rm=True, forcerm=True)
    except docker.errors.BuildError as e:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in e.build_log)
        pytest.fail(f"docker build failed: {e}\n{log[-4000:]}")
    try:
        yield TAG
    finally:
        # A Swarm task's container outlives `docker stack rm` by as long as the engine takes to stop
        # it (on a loaded machine, past remove_stack's wait), and the engine refuses to untag an
        # image a container uses: this session's tag is unique, so its containers are this module's.
        deadline = time.monotonic() + 60
        while (left := client.containers.list(all=True, filters={"ancestor": TAG})) and time.monotonic() < deadline:
            for container in left:
                try:
                    container.remove(force=True)
                except docker.errors.APIError:
                    pass  # gone meanwhile, or its removal already under way: listed again below
            time.sleep(0.5)
        # only this session's tag: its layers stay as the next build's cache
        client.images.remove(TAG, noprune=True)


def compose_yaml() -> str:
    """The stack and Docktor in one file: Docktor's settings in x-docktor (Compose ignores them)."""
    return """
x-docktor:
  mode: advisory
  state_dir: /state
services:
  nats:
    image: nats:2.10-alpine
    command: ["-js"]
    ports: ["127.0.0.1:${NATS_PORT}:4222"]
  worker:
    image: nats:2.10-alpine
    entrypoint: ["sleep", "1000000"]
    x-docktor:
      min_replicas: 1
      max_replicas: 3
      check_interval: 1s
      policy: rules
      queue: {kind: nats, url: "nats://nats:4222", stream: JOBS, consumer: WORKERS, timeout: 2s}
      rules:
        scale_up_when: [{metric: queue.backlog, op: ">", value: 100}]
        scale_down_when: [{metric: queue.backlog, op: "<=", value: 10}]
  docktor:
    image: ${DOCKTOR_IMAGE}
    # the project's name inside the container too (there the file's folder is /config)
    environment: {COMPOSE_PROJECT_NAME: "${COMPOSE_PROJECT_NAME}"}
    group_add: ["${DOCKER_GID}"]
    volumes:
      - ${DOCKER_SOCKET}:/var/run/docker.sock
      - .:/config:ro
      - docktor-state:/state
    depends_on: [nats]
    # the image's HEALTHCHECK command; only its timings shortened for the test
    healthcheck: {interval: 1s, timeout: 10s, retries: 3, start_period: 120s}
    stop_grace_period: 60s
volumes:
  docktor-state:
"""


@dataclass
class Stack:
    project: str
    file: Path
    env: dict[str, str]
    nats_url: str

    def docktor(self) -> Any:
        (c,) = containers(self.project, "docktor")
        c.reload()
        return c

    def exec(self, *cmd: str) -> str:
        """``cmd`` in the running Docktor container (as the image's user): its stdout; it must exit 0."""
        code, (out, err) = self.docktor().exec_run(list(cmd), demux=True)
        assert code == 0, f"{cmd} exited {code}: {(err or b'').decode(errors='replace')}"
        return (out or b"").decode()


@pytest.fixture
def stack(image: str, tmp_path: Path) -> Iterator[Stack]:
    socket = engine_socket()
    project = unique_project("docktor-image")
    port = free_port()
    env = {"COMPOSE_PROJECT_NAME": project, "DOCKTOR_IMAGE": image, "DOCKER_SOCKET": str(socket),
           "DOCKER_GID": str(socket.stat().st_gid), "NATS_PORT": str(port)}
    tmp_path.chmod(0o755)  # mounted as /config: the image's user must read it (pytest makes it 0700)
    file = tmp_path / "compose.yaml"
    file.write_text(compose_yaml())
    # the variables also where the Compose CLI inside Docktor's container reads them: /config/.env
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    s = Stack(project, file, env, f"nats://127.0.0.1:{port}")
    try:
        compose(project, file, "up", "-d", "nats", "worker", env=env)
        wait_until("JetStream answers", lambda: _stream_made(s.nats_url), 60, every=0.5)
        compose(project, file, "up", "-d", "docktor", env=env)
        yield s
    finally:
        down(project, file, env=env)


def _stream_made(url: str) -> bool:
    try:
        asyncio.run(make_stream(url, backlog=40))
    except Exception:  # not up yet: nats-py raises its own errors and OSError
        return False
    return True


def docktor_log(container: Any, *config: str) -> list[dict[str, Any]]:
    """The decisions as ``docktor daemon logs --json`` prints them inside the running container
    (``config``: its --compose option, else the config it finds in /config)."""
    code, (out, err) = container.exec_run(["docktor", "daemon", "logs", "--json", "--tail", "all", *config], demux=True)
    assert code == 0, (err or b"").decode(errors="replace")
    return [json.loads(line) for line in (out or b"").decode().splitlines()]


def volume_log(project: str, image: str, tmp: Path) -> Path:
    """The decision log copied off the named volume (by the image's own user: the file is 0600)."""
    import docker

    client = docker.from_env(timeout=60)
    reader = client.containers.create(image, ["true"], volumes={f"{project}_docktor-state": {"bind": "/state", "mode": "ro"}})
    try:
        chunks, _ = reader.get_archive("/state/decisions.jsonl")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.getmember("decisions.jsonl")
            assert member.uid == IMAGE_UID and member.mode & 0o077 == 0, (member.uid, oct(member.mode))
            data = tar.extractfile(member)
            assert data is not None
            out = tmp / "decisions.jsonl"
            out.write_bytes(data.read())
            return out
    finally:
        reader.remove(force=True)


# --------------------------------------------------------------------------- tests


def test_image_runs_docktor_as_a_non_root_user(image: str) -> None:
    import docker

    client = docker.from_env(timeout=60)
    version = client.containers.run(image, ["docktor", "--version"], remove=True).decode()
    assert version.startswith("docktor "), version
    ids = client.containers.run(image, ["sh", "-c", "id -u && id -g"], remove=True).decode().split()
    assert ids == [str(IMAGE_UID), str(IMAGE_UID)]
    attrs = client.images.get(image).attrs["Config"]
    assert attrs["Cmd"] == ["docktor", "daemon", "start", "--foreground"]
    assert attrs["Healthcheck"]["Test"] == ["CMD", "docktor", "daemon", "status"]
    assert "/state" in attrs["Volumes"]
    # no compiler left behind by the build
    found = client.containers.run(image, ["sh", "-c", "command -v gcc cc g++ make || true"], remove=True).decode()
    assert found.strip() == ""


def test_in_a_compose_stack_healthy_reads_the_engine_and_stops_cleanly_on_sigterm(
        stack: Stack, image: str, tmp_path: Path) -> None:
    wait_until("the docktor container is healthy",
               lambda: stack.docktor().attrs["State"].get("Health", {}).get("Status") == "healthy", 180, every=1)
    c = stack.docktor()
    # the socket's group is the only group it gains: the user itself stays 10001
    assert stack.exec("id", "-u").strip() == str(IMAGE_UID)
    assert stack.env["DOCKER_GID"] in stack.exec("id", "-G").split()
    # the daemon's own CLI inside the container finds the config in /config by itself
    status = stack.exec("docktor", "daemon", "status", "--json")
    assert json.loads(status)["running"] is True

    def ticked_with_replicas() -> list[dict[str, Any]]:
        # current_replicas is the worker's container count, read from the engine through the socket;
        # queue.backlog is JetStream's (40 messages waiting)
        return [r for r in docktor_log(c) if r["current_replicas"] == 1 and r["observations"].get("queue.backlog") == 40]

    wait_until("decisions with the worker's replicas and the queue's backlog", ticked_with_replicas, 60, every=1)

    compose(stack.project, stack.file, "stop", "docktor", env=stack.env)  # SIGTERM (the image's STOPSIGNAL)
    c.reload()
    assert c.attrs["State"]["Status"] == "exited"
    assert c.attrs["State"]["ExitCode"] == 0, c.logs(tail=40).decode(errors="replace")
    assert not c.attrs["State"]["OOMKilled"]

    log = volume_log(stack.project, image, tmp_path)
    lines = log.read_text().splitlines()
    assert lines and all(json.loads(line)["service"] == "worker" for line in lines)  # every line whole
    records = list(read_records(log))
    assert records and all(r["mode"] == "advisory" and not r["executed"] for r in records)
    assert any(r["current_replicas"] == 1 and r["observations"].get("queue.backlog") == 40 for r in records)
    # advisory: the worker was never touched
    assert len(containers(stack.project, "worker")) == 1


# --------------------------------------------------------------------------- in examples/nats-multi


def test_in_examples_nats_multi_the_autoscale_profile_scales_the_consumer_up_and_back_down(
        image: str, tmp_path: Path) -> None:
    """examples/nats-multi as it is, with ``--profile autoscale``: its own ``docktor`` service (only
    its ``build:`` replaced by this module's image, built once) scales the consumer under a burst
    and back down, its decision log on the named volume, the web service untouched."""
    socket = engine_socket()
    folder = tmp_path / "nats-multi"
    shutil.copytree(REPO / "examples" / "nats-multi", folder)
    file = folder / "docker-compose.yaml"
    doc = yaml.safe_load(file.read_text())
    del doc["services"]["docktor"]["build"]  # the repository's Dockerfile, built once for the module
    doc["services"]["docktor"]["image"] = "${DOCKTOR_IMAGE}"
    doc["services"]["docktor"]["healthcheck"] = {"interval": "1s", "timeout": "10s", "retries": 3, "start_period": "120s"}
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    for d in (tmp_path, folder, *(p for p in folder.rglob("*") if p.is_dir())):
        d.chmod(0o755)  # the image's user reads the folder (pytest makes tmp_path 0700)
    project = unique_project("docktor-image-nats")
    port = free_port()
    env = {"COMPOSE_PROJECT_NAME": project, "DOCKTOR_IMAGE": image, "DOCKER_SOCKET": str(socket),
           "DOCKER_GID": str(socket.stat().st_gid), "NATS_PORT": str(port), "NATS_MONITOR_PORT": str(free_port()),
           "DOCKTOR_METRICS_PORT": str(free_port()), "PROCESS_TIME_MS": "20", "RATE": "0", "BURST_INTERVAL": "0",
           "CHECK_INTERVAL": "1s"}
    # as the example's README says: the variables in .env, read by Compose on the host and in the container
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    url = f"nats://127.0.0.1:{port}"
    try:
        compose(project, file, "--profile", "autoscale", "up", "-d", "--build", env=env, timeout=600)
        asyncio.run(wait_for_consumer(url))
        web_before = {c.id: c.attrs["State"]["StartedAt"] for c in containers(project, "web")}
        producer_before = {c.id: c.attrs["State"]["StartedAt"] for c in containers(project, "producer")}

        def docktor() -> Any:
            (c,) = containers(project, "docktor")
            c.reload()
            return c

        try:
            wait_until("the docktor container is healthy",
                       lambda: docktor().attrs["State"].get("Health", {}).get("Status") == "healthy", 180, every=1)
        except AssertionError as e:  # say why: its own log and the health check's answers
            health = [h.get("Output", "").strip() for h in docktor().attrs["State"].get("Health", {}).get("Log", [])][-3:]
            raise AssertionError(f"{e}\nhealth checks: {health}\n{docktor().logs(tail=40).decode(errors='replace')}") from None
        assert len(containers(project, "consumer", all=False)) == 1
        # the README's command: the CLI inside finds the config through DOCKTOR_CONFIG
        wait_until("`docker compose exec docktor docktor daemon logs -n 5` shows the consumer's decisions", lambda: "consumer" in compose(
            project, file, "--profile", "autoscale", "exec", "-T", "docktor", "docktor", "daemon", "logs", "-n", "5", env=env), 60, every=1)
        asyncio.run(publish_events(url, 4000))
        peak = 1

        def drained_after_scale_up() -> bool:
            nonlocal peak
            peak = max(peak, len(containers(project, "consumer", all=False)))
            return peak >= 3 and nats_multi_backlog(url) == 0

        wait_until("the consumer scaled up by the container and the backlog drained", drained_after_scale_up, 180, every=0.5)
        wait_until("the idle consumer scaled back down to min_replicas",
                   lambda: len(containers(project, "consumer")) == 1, 180, every=0.5)
        # the last scale-in's outcome follows its intent once the executor has verified it
        wait_until("the scale-in's outcome is logged", lambda: any(
            r["decision"] == "scale_down" and r["executed"] and r["outcome"]["status"] == "ok"
            for r in docktor_log(docktor())), 60, every=1)
        compose(project, file, "--profile", "autoscale", "stop", "docktor", env=env)  # SIGTERM
        c = docktor()
        assert c.attrs["State"]["ExitCode"] == 0, c.logs(tail=40).decode(errors="replace")
        records = list(read_records(volume_log(project, image, tmp_path)))
        ups = [r for r in records if r["decision"] == "scale_up" and r["executed"]]
        downs = [r for r in records if r["decision"] == "scale_down" and r["executed"]]
        assert ups and ups[0]["outcome"]["status"] == "ok", ups[:1]
        assert max(r["target_replicas"] for r in ups) >= 3
        assert downs and downs[-1]["target_replicas"] == 1 and downs[-1]["outcome"]["status"] == "ok", downs[-1:]
        assert {r["service"] for r in records} == {"consumer"}
        # the other services of the same project, untouched
        assert {c.id: c.attrs["State"]["StartedAt"] for c in containers(project, "web")} == web_before
        assert {c.id: c.attrs["State"]["StartedAt"] for c in containers(project, "producer")} == producer_before
    finally:
        try:  # with the profile: Docktor's container and its volume go too
            compose(project, file, "--profile", "autoscale", "down", "-v", "--remove-orphans", "-t", "2", env=env, timeout=120)
        except (AssertionError, subprocess.TimeoutExpired):
            pass
        down(project, file, env=env)


# --------------------------------------------------------------------------- in examples/nats-swarm


@pytest.mark.swarm
def test_in_examples_nats_swarm_the_docktor_service_scales_the_consumer_it_finds_by_label(image: str, tmp_path: Path) -> None:
    """examples/nats-swarm's stack as it is, its ``docktor`` service this module's image: on a
    single-node swarm it finds the consumer by its deploy.labels and scales it up under a burst and
    back down, the web service's tasks untouched."""
    from tests.support.swarm_peers import deploy_stack, remove_stack, replicas_spec, running_tasks, swarm_session, unique_stack

    socket = engine_socket()
    multi = REPO / "examples" / "nats-multi" / "docker-compose.yaml"
    compose(unique_project("docktor-build"), multi, "build", "producer", "consumer", timeout=900)  # stack deploy does not build
    name = unique_stack("dtk-image-swarm")
    port, monitor = free_port(), free_port()
    env = {"DOCKTOR_IMAGE": image, "DOCKER_SOCKET": str(socket), "DOCKER_GID": str(socket.stat().st_gid),
           "NATS_PORT": str(port), "NATS_MONITOR_PORT": str(monitor), "RATE": "0", "BURST_INTERVAL": "0",
           "PROCESS_TIME_MS": "20", "CHECK_INTERVAL": "1s", "COOLDOWN_UP": "2s", "COOLDOWN_DOWN": "2s",
           "STABILIZATION": "2s", "DISCOVER_INTERVAL": "1s"}
    url = f"nats://127.0.0.1:{port}"
    consumer, web = f"{name}_consumer", f"{name}_web"
    with swarm_session():
        try:
            deploy_stack(name, REPO / "examples" / "nats-swarm" / "stack.yaml", env=env)
            asyncio.run(wait_for_consumer(url, timeout=180))
            wait_until("the stack's services run", lambda: len(running_tasks(f"{name}_docktor")) == 1
                       and len(running_tasks(web)) == 2 and len(running_tasks(consumer)) == 1, 180, every=0.5)
            web_before = {t["ID"] for t in running_tasks(web)}

            def docktor() -> Any:
                import docker

                (c,) = docker.from_env(timeout=30).containers.list(filters={"label": f"com.docker.swarm.service.name={name}_docktor"})
                return c

            wait_until("Docktor found the consumer by label and decides on it",
                       lambda: any(r["service"] == consumer for r in docktor_log(docktor())), 120, every=1)
            asyncio.run(publish_events(url, 4000))
            peak = 1

            def drained_after_scale_up() -> bool:
                nonlocal peak
                peak = max(peak, len(running_tasks(consumer)))
                return peak >= 3 and nats_multi_backlog(url) == 0

            wait_until("the consumer scaled up by the Swarm service and the backlog drained", drained_after_scale_up, 180, every=0.5)
            wait_until("the idle consumer scaled back down to min_replicas",
                       lambda: replicas_spec(consumer) == 1 and len(running_tasks(consumer)) == 1, 240, every=0.5)
            records = docktor_log(docktor())
            ups = [r for r in records if r["decision"] == "scale_up" and r["executed"]]
            assert ups and {r["service"] for r in records} == {consumer}
            assert max(r["target_replicas"] for r in ups) >= 3
            assert {t["ID"] for t in running_tasks(web)} == web_before
            # the process runs as the image's user, with the socket's group as its group
            assert docktor().attrs["Config"]["User"] == f"{IMAGE_UID}:{env['DOCKER_GID']}"
        finally:
            remove_stack(name)
