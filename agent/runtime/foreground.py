"""The daemon process's main: ``docktor daemon start --foreground`` (and what a detached start runs).

It takes the config's lock, writes the pid file, sets up logging (every line scrubbed of
credentials), serves ``/metrics`` when configured, opens the :class:`Supervisor`, claims the
executors' targets, answers on the control socket, and runs until SIGTERM/SIGINT; SIGHUP
reloads. What finds and stops a daemon from outside is :mod:`.process`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig
from docktor.agent.runtime.commands import ControlRefused, control_handler, reload_from
from docktor.agent.runtime.control_socket import ControlServer
from docktor.agent.runtime.exporter import serve as serve_metrics
from docktor.agent.runtime.process import acquire_lock, paths_for, record_daemon
from docktor.agent.runtime.rundir import TargetBusy
from docktor.agent.runtime.supervisor import Supervisor
from docktor.agent.runtime.swarm_discovery import SwarmDiscovery
from docktor.tools.sdk import readable_by_others, write_atomic


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



#: something served beside the supervisor from the same process (``docktor keda``'s gRPC server):
#: started once the loops are built and their targets held, it returns what stops it, which runs
#: before the loops stop; it raises :class:`CannotServe` to refuse the start with one line
Companion = Callable[[Supervisor], Awaitable[Callable[[], Awaitable[None]]]]


class CannotServe(Exception):
    """A companion could not start (its port is taken): the daemon refuses to start, with this line."""


def run_foreground(config: DocktorConfig, *, mode: str | None = None, companion: Companion | None = None) -> int:
    """Run the daemon in this process until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""

    paths = paths_for(config)
    lock_fd = acquire_lock(paths, config=config.path)
    write_atomic(paths.pid, f"{os.getpid()}\n".encode(), sync=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    log = logging.getLogger("docktor")
    for w in config.warnings:
        log.warning("config: %s", w)
    if readable_by_others(paths.state_dir):  # not changed: it may be a folder the user chose for more than Docktor
        log.warning("state_dir %s can be listed by other users: its files are 0600, but their names show; "
                    "chmod 700 it", paths.state_dir)
    code = 0
    refusal: list[str] = []  # a one-line reason not to run, printed last

    async def main() -> None:
        nonlocal code
        daemon = Supervisor(config, mode=mode, log_path=paths.decisions, status_path=paths.status, state="write")
        exporter = serve_metrics(config, daemon)  # /metrics when metrics.listen is set; binds before any tick
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server: ControlServer | None = None
        stop_companion: Callable[[], Awaitable[None]] | None = None
        reloads: set[asyncio.Task[Any]] = set()
        # discover: services found while running (Swarm labels), added to the file's at every
        # reload; it looks only while the config says so (a reload may turn it on or off)
        discovery = SwarmDiscovery(daemon, config)
        discovering: asyncio.Task[None] | None = None

        async def reload() -> dict[str, Any]:
            result = await reload_from(daemon, config.path or Path("docktor.yaml"), discovery.complete)
            record_daemon(paths, daemon.config)
            return result

        def on_hup() -> None:
            async def run() -> None:
                try:
                    await reload()
                except ControlRefused as e:
                    log.error("reload refused, still running the previous config: %s", "; ".join(e.problems))

            task = loop.create_task(run())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        try:
            await daemon.open()
            try:
                daemon.claim_targets("daemon")
            except TargetBusy as e:
                where = f"service {e.holder.get('service')}: " if e.holder.get("service") else ""
                refusal.append(f"error: {where}{e}; refusing to start a second daemon on it")
                code = 2
                return
            server = ControlServer(paths.socket, control_handler(daemon, reload))
            await server.start()
            loop.add_signal_handler(signal.SIGHUP, on_hup)
            if companion is not None:
                try:
                    stop_companion = await companion(daemon)
                except CannotServe as e:
                    refusal.append(f"error: {e}")
                    code = 2
                    return
            record_daemon(paths, config)
            daemon.write_status()
            log.info("started: %d service(s), mode %s, log %s, control socket %s", len(config.services), daemon.mode,
                     paths.decisions, paths.socket)
            if config.discover.swarm_labels:
                log.info("swarm labels: scaling the Swarm services labelled %s=true too (%s), looking every %gs",
                         "docktor.enable", f"stack {config.discover.swarm_stack}" if config.discover.swarm_stack
                         else "every stack", config.discover.interval)
            discovering = loop.create_task(discovery.run(stop))
            await daemon.run(stop)
        finally:
            for task in list(reloads):
                task.cancel()
            if discovering is not None:
                # stop is set: it ends after the look in progress (a reconcile is not cut in half)
                await asyncio.wait({discovering}, timeout=10)
                discovering.cancel()
                await asyncio.gather(discovering, return_exceptions=True)
            await discovery.close()
            if stop_companion is not None:
                await stop_companion()
            await daemon.close()
            if server is not None:
                await server.close()  # last: ``daemon status`` answers while replicas stop
            exporter.close()
            if not refusal:
                log.info("stopped")

    try:
        asyncio.run(main())
    finally:
        paths.pid.unlink(missing_ok=True)
        paths.status.unlink(missing_ok=True)
        paths.info.unlink(missing_ok=True)
        os.close(lock_fd)
    if refusal:  # last, so that `daemon start` shows it as the reason
        from docktor.agent.redact import redact

        print(redact(refusal[0]), file=sys.stderr, flush=True)
    return code
