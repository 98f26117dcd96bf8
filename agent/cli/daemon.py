"""``docktor daemon start|stop|status|logs``: run Docktor in the background and read what it decides."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from docktor.agent.cli.common import ConfigOpt, check_executors, handles_errors, load
from docktor.agent.errors import UsageError

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(text: str | None, now: float) -> float | None:
    """``10m``, ``2h``, ``30s``, ``1d`` ago, or an RFC 3339 timestamp."""
    if text is None:
        return None
    m = _SINCE.match(text.strip())
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    from docktor.agent.timestamps import parse_rfc3339

    try:
        return parse_rfc3339(text)
    except ValueError:
        raise UsageError(f"--since: {text!r} is neither a duration (10m, 2h, 30s) nor an RFC 3339 time") from None


def register(app: typer.Typer) -> None:
    daemon_app = typer.Typer(help="Run Docktor in the background and look at what it decides.", no_args_is_help=True)
    app.add_typer(daemon_app, name="daemon")

    @daemon_app.command("start")
    @handles_errors
    def start(
        config: ConfigOpt = Path("docktor.yaml"),
        advisory: Annotated[bool, typer.Option("--advisory", help="Decide and log, never act.")] = False,
        foreground: Annotated[bool, typer.Option("--foreground", help="Stay attached (containers, systemd).")] = False,
    ) -> None:
        """Start the daemon (in the background unless --foreground)."""
        from docktor.agent.cli.render import err, say
        from docktor.agent.runtime import daemon

        cfg = load(config, check_llm=True)
        check_executors(cfg)  # refuses what an executor's backend proves wrong; warnings are validate's
        mode = "advisory" if advisory else None
        try:
            if foreground:
                raise typer.Exit(daemon.run_foreground(cfg, mode=mode))
            pid = daemon.start_background(config, cfg, advisory=advisory)
        except daemon.AlreadyRunning as e:
            err.print(f"error: {e}; stop it with: docktor daemon stop --config {config}", markup=False)
            raise typer.Exit(1) from None
        paths = daemon.paths_for(cfg)
        say(f"started docktor (pid {pid}); decisions in {paths.decisions}; logs: docktor daemon logs --config {config} -f")

    @daemon_app.command("stop")
    @handles_errors
    def stop(config: ConfigOpt = Path("docktor.yaml")) -> None:
        """Stop the daemon; it finishes its current tick and flushes the log first."""
        from docktor.agent.cli.render import say
        from docktor.agent.runtime import daemon

        pid = daemon.stop(load(config))
        say("not running" if pid is None else f"stopped docktor (pid {pid})")

    @daemon_app.command("status")
    @handles_errors
    def status(
        config: ConfigOpt = Path("docktor.yaml"),
        as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    ) -> None:
        """Is the daemon running; per service, its replicas and last decision."""
        import json

        from rich.table import Table

        from docktor.agent.cli.render import out
        from docktor.agent.runtime import daemon

        st = daemon.status(load(config))
        if as_json:
            out.print_json(json.dumps(st))
            return
        if not st["running"]:
            out.print("docktor is not running", markup=False)
            raise typer.Exit(3)  # like systemctl/LSB: 3 = not running
        out.print(f"docktor is running: pid {st['pid']}, mode {st.get('mode')}, up {st.get('uptime_s')} s", markup=False)
        table = Table("service", "replicas", "last decision", "reason")
        for name, s in st.get("services", {}).items():
            reps = s.get("replicas") or {}
            last = s.get("last_decision") or {}
            table.add_row(
                name,
                f"{reps.get('running', '?')}/{reps.get('desired', '?')}",
                f"{last.get('decision', '-')} {last.get('current_replicas', '')}->{last.get('target_replicas', '')}",
                last.get("reason", ""),
            )
        out.print(table)

    @daemon_app.command("logs")
    @handles_errors
    def logs(
        config: ConfigOpt = Path("docktor.yaml"),
        follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new decisions.")] = False,
        service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
        since: Annotated[str | None, typer.Option("--since", help="Only decisions newer than 10m, 2h, or a timestamp.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Raw JSON lines.")] = False,
    ) -> None:
        """The decision log: a readable table, or raw JSON lines with --json."""
        import itertools
        import json

        from docktor.agent.cli.render import one_line, print_table, say
        from docktor.agent.runtime.daemon import paths_for
        from docktor.agent.runtime.decision_log import follow, log_files, read_records, read_records_in

        cfg = load(config)
        if service is not None and service not in {s.name for s in cfg.services}:
            raise UsageError(f"--service: no service named {service!r} in {config}")
        path = paths_for(cfg).decisions
        since_ts = parse_since(since, time.time())
        if not follow_:
            records = list(read_records(path, since=since_ts, service=service))
            if as_json:
                for rec in records:
                    sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
            else:
                print_table(records)
            return
        # Following: rotated files first, then the live file from its start on one handle.
        rotated = [rec for f in log_files(path)[:-1] for rec in read_records_in(f, since=since_ts, service=service)]
        try:
            for rec in itertools.chain(rotated, follow(path, service=service, since=since_ts, from_start=True)):
                if as_json:
                    sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
                    sys.stdout.flush()
                else:
                    say(one_line(rec))
        except KeyboardInterrupt:
            pass
