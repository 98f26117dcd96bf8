"""The real ``docktor`` CLI, run as a user runs it (``python -m docktor.agent.cli``), and the small
config the CLI tests run it on. One runner for every test: a new process each time, its output
captured as text, a terminal 200 columns wide (tables are not cut to the runner's width).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.peers import NatsServer

__all__ = ["cli_command", "cli_environment", "docktor", "docktor_async", "write_config"]


def cli_command(*args: str) -> list[str]:
    """The command line of ``docktor ARGS`` (for a test that starts it with Popen itself)."""
    return [sys.executable, "-m", "docktor.agent.cli", *args]


def cli_environment(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment, ``COLUMNS=200``, then ``env``: a value replaces, None removes."""
    out = {**os.environ, "COLUMNS": "200"}
    for name, value in (env or {}).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def docktor(*args: str, cwd: Path | None = None, env: Mapping[str, str | None] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``docktor ARGS``, waited for; ``env`` as :func:`cli_environment` takes it."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=cli_environment(env), check=False)


async def docktor_async(*args: str, cwd: Path | None = None, env: Mapping[str, str | None] | None = None,
                        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """:func:`docktor` for a test whose peers run in its own event loop (a blocking wait would
    stop them from answering the CLI)."""
    proc = await asyncio.create_subprocess_exec(*cli_command(*args), cwd=cwd, env=cli_environment(env),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(cli_command(*args), proc.returncode, out.decode(), err.decode())


def write_config(tmp_path: Path, nats: NatsServer | None, *, mode: str = "autonomous", interval: str = "0.5s",
                 extra_services: str = "") -> Path:
    """``tmp_path/docktor.yaml``: one local-executor service ``worker`` (2-4 sleeping replicas) on
    the JetStream consumer JOBS/WORKERS of ``nats`` (a closed port without one), rules on its backlog."""
    url = nats.url if nats else "nats://127.0.0.1:9"
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(f"""
mode: {mode}
services:
  - name: worker
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: 2
    max_replicas: 4
    check_interval: {interval}
    policy: rules
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 100}}]
{extra_services}""")
    return cfg


def on_a_terminal(cmd: list[str], env: Mapping[str, str], *, columns: int | None = None, timeout: float = 120) -> str:
    """What ``cmd`` writes to its stdout when that is the slave side of a pseudo-terminal (rich
    lays a pipe out differently), ``columns`` wide when given; it must exit 0 (its stderr shown
    when it does not). The text as written: styles and ``\r\n`` kept."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    if columns is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=dict(env))
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        proc.wait(timeout)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0, stderr
    return b"".join(chunks).decode()
