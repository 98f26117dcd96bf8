"""``docktor daemon start|stop|status|logs``: run Docktor in the background and read what it decides."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, check_before_start, config_file, group, handles_errors, load
from docktor.agent.problems import UsageError

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


def parse_tail(text: str) -> int | None:
    """``--tail``: a count, or ``all`` (None: no limit)."""
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"--tail: {text!r} is neither a number of decisions nor 'all'") from None
    if n < 0:
        raise UsageError(f"--tail: must be >= 0 or 'all', got {n}")
    return n


def locate(config: Path) -> Any:
    """Where the daemon of ``config`` keeps its state, valid config or not (a warning says how it
    was found when the config does not load)."""
    from docktor.agent.cli.render import warn
    from docktor.agent.runtime.locate import locate as find

    located = find(config)
    if located.problems:
        more = f" (and {len(located.problems) - 1} more)" if len(located.problems) > 1 else ""
        warn(f"{located.problems[0]}{more}; using the state in {located.paths.state_dir} ({located.how})")
    return located


def call_daemon(config: Path, ask: Callable[[Any], Any]) -> Any:
    """``ask(client)`` on the running daemon of ``config``: its errors as ``error:`` lines (exit 2 for
    bad input, 1 otherwise); exit 1 when no daemon runs or it does not answer."""
    from docktor.agent.runtime.control_socket import ControlClient, ControlError, ControlUnavailable
    from docktor.agent.runtime.process import running_pid

    located = locate(config)
    pid = running_pid(located.paths)
    if pid is None:
        print(f"error: docktor is not running for {config} (state in {located.paths.state_dir}); "
              f"start it with: docktor daemon start --config {config}", file=sys.stderr)
        raise typer.Exit(1)
    try:
        return ask(ControlClient(located.paths.socket))
    except ControlError as e:
        for p in e.problems:
            print(f"error: {p}", file=sys.stderr)
        if e.code == "invalid_config":
            print("the daemon keeps running the previous config", file=sys.stderr)
        raise typer.Exit(2 if e.code in ("bad_request", "unknown_service", "invalid_config") else 1) from None
    except ControlUnavailable as e:
        print(f"error: the daemon (pid {pid}) does not answer: {e}", file=sys.stderr)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    daemon_app = group("Run Docktor in the background and look at what it decides.")
    app.add_typer(daemon_app, name="daemon")

    @daemon_app.command("start", short_help="Start the daemon (detached by default).")
    @handles_errors
    def start(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        advisory: Annotated[bool, typer.Option("--advisory", help="Decide and log, never act.")] = False,
        foreground: Annotated[bool, typer.Option("--foreground", help="Stay attached (containers, systemd).")] = False,
    ) -> None:
        """Start the daemon (in the background unless --foreground)."""
        config = config_file(config, compose)
        from docktor.agent.cli.render import err, say
        from docktor.agent.runtime import process

        cfg = load(config, check_llm=True)
        check_before_start(cfg)
        for svc in cfg.services:
            if svc.executor is not None and svc.executor.kind == "keda":
                err.print(f"warning: {svc.name}: executor: keda, and daemon start serves no KEDA: its decisions reach no "
                          "replica (run docktor keda to serve them)", markup=False)
        mode = "advisory" if advisory else None
        try:
            if foreground:
                from docktor.agent.runtime.foreground import run_foreground

                raise typer.Exit(run_foreground(cfg, mode=mode))
            pid = process.start_background(config, cfg, advisory=advisory)
        except process.AlreadyRunning as e:
            # The holder may run another config that shares this state_dir: name its own file, so
            # that the command suggested stops the daemon that holds it, and says which one that is.
            holder = e.config or str(config)
            shared = "" if e.config is None or Path(e.config) == config.resolve() else "; it runs another config with the same state_dir"
            err.print(f"error: {e}{shared}; stop it with: docktor daemon stop --config {holder}", markup=False)
            raise typer.Exit(1) from None
        paths = process.paths_for(cfg)
        say(f"started docktor (pid {pid}); decisions in {paths.decisions}; logs: docktor daemon logs --config {config} -f")

    @daemon_app.command("stop", short_help="Stop the daemon after its current tick.")
    @handles_errors
    def stop(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        force: Annotated[bool, typer.Option("--force", help="SIGKILL the daemon if it has not stopped after the wait.")] = False,
        timeout: Annotated[float | None, typer.Option(
            "--timeout", "-t", metavar="SECONDS", min=0,
            help="How long to wait (default: the longest replica stop grace period + a check interval + 10 s).")] = None,
    ) -> None:
        """Stop the daemon; it finishes its current tick, stops its replicas and flushes the log first.

        Works when the config file has since been broken: a running daemon records where its state is."""
        config = config_file(config, compose, missing_ok=True)
        from docktor.agent.cli.render import err, say
        from docktor.agent.runtime import process

        located = locate(config)
        try:
            stopped = process.stop(located.paths, wait=timeout, force=force)
        except process.StillRunning as e:
            err.print(f"error: {e}; still running:", markup=False)
            for line in e.left:
                err.print(f"  {line}", markup=False)
            err.print(f"  (wait longer with --timeout, or kill it: docktor daemon stop --config {config} --force)", markup=False)
            raise typer.Exit(1) from None
        if stopped is None:
            say("not running")
        elif stopped.killed:
            say(f"killed docktor (pid {stopped.pid}) with SIGKILL: it had not stopped after {stopped.waited:g} s")
            for line in stopped.left or []:
                say(f"  still running: {line}")
        else:
            say(f"stopped docktor (pid {stopped.pid})")

    @daemon_app.command("status", short_help="Running? Replicas and last decisions, live.")
    @handles_errors
    def status(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    ) -> None:
        """Is the daemon running; per service, its replicas, pause and last decision (asked live on the
        control socket; from its status file when the daemon does not answer)."""
        config = config_file(config, compose, missing_ok=True)
        import json

        from rich.table import Table

        from docktor.agent.cli.render import arrow, out, reason_text, slo_cell, warn
        from docktor.agent.runtime.locate import status as daemon_status

        st = daemon_status(locate(config).paths)
        if st.get("running") and not st.get("live"):
            age = st.get("status_file_age_s")
            warn(f"{st.get('not_live_because')}; showing its status file"
                 f"{f' (written {age:g} s ago)' if age is not None else ' (none found)'}")
        if as_json:
            out.print_json(json.dumps(st))
            return
        if not st["running"]:
            out.print("docktor is not running", markup=False)
            raise typer.Exit(3)  # like systemctl/LSB: 3 = not running
        phase = "" if st.get("phase") in (None, "running") else f", {st.get('phase')}"
        out.print(f"docktor is running: pid {st['pid']}, mode {st.get('mode')}, up {st.get('uptime_s')} s{phase}", markup=False)
        dlog = st.get("decision_log") or {}
        if dlog and not dlog.get("writable", True):
            out.print(
                f"decision log NOT WRITABLE since {dlog.get('since')} ({dlog.get('error')}): not scaling until it is; "
                f"{dlog.get('unrecorded', 0)} decision(s) unrecorded, {dlog.get('refused_actions', 0)} scale action(s) "
                f"not taken ({dlog.get('path')})",
                markup=False, style="bold red",
            )
        services = st.get("services", {})
        paused = any((s or {}).get("paused") for s in services.values())
        slo = any((s or {}).get("slo") for s in services.values())
        table = Table("service", "replicas", "last decision", "reason", *(["wait SLO 5m / 60m"] if slo else []),
                      *(["paused"] if paused else []))
        for name, s in services.items():
            reps = s.get("replicas") or {}
            last = s.get("last_decision") or {}
            pause = s.get("paused")
            known = reps.get("running") is not None and reps.get("desired") is not None
            table.add_row(
                name,
                f"{reps['running']}/{reps['desired']}" if known else "unknown",  # the reason column says why
                # without a count, the decision alone: the replicas column already says unknown
                " ".join(w for w in (last["decision"], arrow(last)) if w != "unknown") if last.get("decision") else "-",
                reason_text(last),  # with what failed (a replica's command not found), as daemon logs shows it
                *([slo_cell(s.get("slo"))] if slo else []),
                *([("until " + pause["until"] if pause.get("until") else "until resumed") if pause else "-"] if paused else []),
            )
        out.print(table)

    @daemon_app.command("reload", short_help="Re-read the config without stopping (also: SIGHUP).")
    @handles_errors
    def reload(config: ConfigOpt = None, compose: ComposeOpt = None) -> None:
        """Re-read and validate the config; a bad one is refused and the daemon keeps running the old one.

        Unchanged services keep running untouched; changed ones restart, keeping the state that still
        means something (docs/operations.md); new ones start, removed ones stop."""
        config = config_file(config, compose, missing_ok=True)
        from docktor.agent.cli.render import say

        report = call_daemon(config, lambda c: c.reload())
        for name, what in report.get("changed", {}).items():
            say(f"restarted {name} ({what} changed)")
            restored = (report.get("restored") or {}).get(name) or {}
            for d in restored.get("discarded", []):
                say(f"  discarded {d}")
        for name in report.get("added", []):
            say(f"started {name}")
        for name in report.get("removed", []):
            say(f"stopped {name}")
        if report.get("unchanged"):
            say(f"unchanged: {', '.join(report['unchanged'])}")
        if report.get("llm_retuned"):
            say(f"llm: {', '.join(report['llm_retuned'])} changed in place (same endpoint: no service restarted)")
        say(f"reloaded {config} (mode {report.get('mode')})")

    @daemon_app.command("logs", short_help="The decisions, as a table or JSON lines.")
    @handles_errors
    def logs(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new decisions.")] = False,
        service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
        since: Annotated[str | None, typer.Option("--since", help="Only decisions newer than 10m, 2h, or a timestamp.")] = None,
        tail: Annotated[
            str, typer.Option("--tail", "-n", metavar="N", help="Show the last N decisions (default 100; 'all' for the whole history).")
        ] = "100",
        as_json: Annotated[bool, typer.Option("--json", help="Raw JSON lines.")] = False,
    ) -> None:
        """The decision log: a readable table (the last --tail decisions), or raw JSON lines with --json.

        With --follow, the history, then every new decision as it is written, in the same columns."""
        config = config_file(config, compose)
        import json

        from docktor.agent.cli.render import print_table, stream_header, stream_row
        from docktor.agent.redact import redact
        from docktor.agent.runtime.log_reader import follow, scan_log
        from docktor.agent.runtime.process import paths_for

        last = parse_tail(tail)
        cfg = load(config)
        if service is not None and service not in {s.name for s in cfg.services}:
            raise UsageError(f"--service: no service named {service!r} in {config}")
        path = paths_for(cfg).decisions
        since_ts = parse_since(since, time.time())

        def show(rec: dict[str, object]) -> None:
            if as_json:
                sys.stdout.write(redact(json.dumps(rec, separators=(",", ":"))) + "\n")
                sys.stdout.flush()
            else:
                stream_row(rec)

        # The newest decisions, read from the end of the log (a big log costs what they weigh),
        # up to where a follower then carries on: nothing is lost or shown twice in between.
        try:
            end: int | None = path.stat().st_size
        except OSError:
            end = None
        newest = scan_log(path, service=service, limit=last, since=since_ts, end=end)
        if not follow_:
            if as_json:
                for rec in newest.records:
                    sys.stdout.write(redact(json.dumps(rec, separators=(",", ":"))) + "\n")
            else:
                print_table(newest.records)
            return
        # Following: the history's raw lines and the live file on one handle, in one stream, so
        # that a decision's intent and outcome are shown as one row even across the seam.
        if not as_json:
            stream_header()
        try:
            for rec in follow(path, service=service, since=since_ts, start_at=end, before=newest.lines):
                show(rec)
        except KeyboardInterrupt:
            pass
