"""Real ``docktor`` daemons for the restart and control tests: started as the user starts them, read
back through their own files, and killed with SIGKILL at the moment a test chooses.

Every process started here is stopped by the test that started it (``Running.kill``/``stop``);
replicas are found by a marker in their command line, so a test can count exactly its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docktor.agent.runtime.process import process_alive
from tests.support.cli import cli_command
from tests.support.waiting import wait_until

__all__ = ["Running", "kill_marked", "marked_processes", "raw_lines", "records", "start_foreground"]


def raw_lines(path: Path) -> list[dict[str, Any]]:
    """Every whole line of the decision log (and its rotations), parsed, in order."""
    out = []
    for f in sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0):
        if f.suffix[1:].isdigit():
            out += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    if path.exists():
        out += [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return out


def records(path: Path, service: str | None = None) -> list[dict[str, Any]]:
    """One record per decision (intent merged with its outcome), as ``daemon logs`` reads them."""
    from docktor.agent.runtime.log_reader import read_records

    return list(read_records(path, service=service))


def marked_processes(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (a test's own replicas)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd and process_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def kill_marked(marker: str) -> None:
    """SIGKILL whatever of a test's own replicas is left (by the marker only that test uses): a
    replica that outlives a killed daemon (to be adopted by the next one) must not outlive the test."""
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Running:
    """A daemon in the foreground (``daemon start --foreground``), as systemd would run it."""

    proc: subprocess.Popen[bytes]
    config: Path
    state_dir: Path
    output: Path
    starts: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no handler runs, nothing is flushed or saved."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def start_foreground(config: Path, state_dir: Path, *, env: dict[str, str] | None = None, ready_timeout: float = 60) -> Running:
    """Start ``docktor daemon start --foreground`` and return once it answers on its control socket."""
    from docktor.agent.runtime.control_socket import ControlClient, ControlUnavailable

    state_dir.mkdir(parents=True, exist_ok=True)
    n = len(list(state_dir.glob("foreground-*.out")))
    output = state_dir / f"foreground-{n}.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(cli_command("daemon", "start", "--config", str(config), "--foreground"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env={**os.environ, **(env or {})},
                                start_new_session=True)
    running = Running(proc, config, state_dir, output)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited at start ({proc.returncode}): {running.log_text()[-2000:]}")
        try:
            return ControlClient(state_dir / "docktor.sock", timeout=2).ping().get("pid") == proc.pid
        except ControlUnavailable:
            return False

    wait_until("the daemon to answer on its control socket", ready, ready_timeout)
    return running
