"""Daemon lifecycle: one daemon per config, found through a pid file and an flock in ``state_dir``.

The lock, not the pid file, is the truth: the kernel drops an flock when its holder dies, so a
stale pid file after a crash never blocks the next start.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig
from docktor.agent.errors import UsageError


@dataclass(frozen=True)
class Paths:
    state_dir: Path

    @property
    def pid(self) -> Path:
        return self.state_dir / "docktor.pid"

    @property
    def lock(self) -> Path:
        return self.state_dir / "docktor.lock"

    @property
    def decisions(self) -> Path:
        return self.state_dir / "decisions.jsonl"

    @property
    def status(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "daemon.log"


def paths_for(config: DocktorConfig) -> Paths:
    assert config.state_dir is not None  # the loader always resolves it
    return Paths(config.state_dir)


class RedactingFilter(logging.Filter):
    """Scrub credentials from every log line (Docktor's own and its libraries', e.g. nats-py's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from docktor.agent.redact import redact

        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class AlreadyRunning(Exception):
    pass


def acquire_lock(paths: Paths) -> int:
    """Take the config's lock for the life of this process; raise AlreadyRunning if held."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"a daemon is already running for this config (pid {running_pid(paths)})") from None
    return fd


def running_pid(paths: Paths) -> int | None:
    """The pid of the live daemon for these paths, or None."""
    try:
        fd = os.open(paths.lock, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(paths.pid.read_text().strip())
        except (OSError, ValueError):
            return -1  # locked, but the pid file is being written
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def run_foreground(config: DocktorConfig, *, mode: str | None = None) -> int:
    """Run the daemon in this process until SIGTERM/SIGINT. Returns the exit code."""
    from docktor.agent.runtime import metrics
    from docktor.agent.runtime.loop import Daemon

    paths = paths_for(config)
    lock_fd = acquire_lock(paths)
    paths.pid.write_text(f"{os.getpid()}\n")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    for w in config.warnings:
        logging.getLogger("docktor").warning("config: %s", w)

    async def main() -> None:
        daemon = Daemon(config, mode=mode, log_path=paths.decisions, status_path=paths.status)
        exporter = metrics.serve(config, daemon)  # /metrics when metrics.listen is set; binds before any tick
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await daemon.open()
            daemon.write_status()
            logging.getLogger("docktor").info(
                "started: %d service(s), mode %s, log %s", len(config.services), daemon.mode, paths.decisions
            )
            await daemon.run(stop)
        finally:
            await daemon.close()
            exporter.close()
            logging.getLogger("docktor").info("stopped")

    try:
        asyncio.run(main())
    finally:
        paths.pid.unlink(missing_ok=True)
        paths.status.unlink(missing_ok=True)
        os.close(lock_fd)
    return 0


def start_background(config_path: Path, config: DocktorConfig, *, advisory: bool, wait: float = 15.0) -> int:
    """Start a detached daemon (its own session, output to daemon.log); return its pid."""
    paths = paths_for(config)
    pid = running_pid(paths)
    if pid is not None:
        raise AlreadyRunning(f"a daemon is already running for this config (pid {pid})")
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--config", str(config_path), "--foreground"]
    if advisory:
        args.append("--advisory")
    with paths.daemon_log.open("ab") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=os.getcwd()
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = paths.daemon_log.read_text(errors="replace").strip().splitlines()[-1:]
            raise UsageError(f"daemon exited at start (code {proc.returncode}): {tail[0] if tail else 'no output'}")
        if running_pid(paths) == proc.pid:
            return proc.pid
        time.sleep(0.05)
    raise UsageError(f"daemon did not report ready within {wait:g} s; see {paths.daemon_log}")


def stop_wait(config: DocktorConfig) -> float:
    """How long ``stop`` waits: the daemon finishes its tick, then stops replicas in parallel,
    each allowed its grace period."""
    from docktor.tools.registry import executor_plugin

    grace = max(
        (executor_plugin(s.executor.kind).grace_period(s.executor.settings) for s in config.services if s.executor),
        default=10.0,
    )
    return grace + max(s.check_interval for s in config.services) + 10


def stop(config: DocktorConfig, *, wait: float | None = None) -> int | None:
    """SIGTERM the daemon and wait until its process has exited. Returns the pid, or None if none ran.

    The lock is released a moment before the process is gone (the interpreter still shuts down),
    so the wait is for the pid itself: when this returns, nothing of the daemon is left.
    """
    paths = paths_for(config)
    wait = stop_wait(config) if wait is None else wait
    pid = running_pid(paths)
    if pid is None or pid <= 0:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return pid
        time.sleep(0.05)
    raise UsageError(f"daemon pid {pid} did not stop within {wait:g} s")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie waiting to be reaped has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: kill(0) said it exists
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def status(config: DocktorConfig) -> dict[str, Any]:
    paths = paths_for(config)
    pid = running_pid(paths)
    out: dict[str, Any] = {"running": pid is not None, "pid": pid, "state_dir": str(paths.state_dir)}
    if pid is not None:
        try:
            st = json.loads(paths.status.read_text())
        except (OSError, ValueError):
            st = {}
        out["mode"] = st.get("mode")
        out["started_at"] = st.get("started_at")
        try:
            out["uptime_s"] = round(time.time() - paths.pid.stat().st_mtime, 1)
        except OSError:
            out["uptime_s"] = None
        out["services"] = st.get("services", {})
        out["decision_log"] = st.get("decision_log")
    return out
