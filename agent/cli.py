"""The ``docktor`` command line.

Every bad input ends the same way: one line per problem on stderr, naming the field or argument,
and exit code 2. Nothing here prints a traceback unless ``DOCKTOR_DEBUG=1``.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.cli_common import handles_errors
from agent.config import DocktorConfig, load_config, summarize
from agent.errors import UsageError

app = typer.Typer(
    name="docktor",
    help="Scale queue workers on queue depth and throughput, with every decision explained.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
daemon_app = typer.Typer(help="Run Docktor in the background and look at what it decides.", no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")

# Not a terminal (a pipe, a file, CI): wide enough that reasons stay on one line.
out = Console() if Console().is_terminal else Console(width=200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to docktor.yaml.")]
def _load(path: Path, *, check_llm: bool = False) -> DocktorConfig:
    """Load the config; with ``check_llm``, also resolve the LLM endpoint (key present, URL valid)."""
    config = load_config(path)
    for w in config.warnings:
        err.print(f"warning: {w}", markup=False)
    if check_llm and config.llm.provider != "none":
        from agent.llm_client import resolve_endpoint

        resolve_endpoint(config.llm, os.environ)
    return config


# ---------------------------------------------------------------------------- validate


@app.command()
@handles_errors
def validate(config: ConfigOpt = Path("docktor.yaml")) -> None:
    """Check a config file: a summary line per service, or one line per problem (exit 2)."""
    cfg = _load(config, check_llm=True)
    for svc in cfg.services:
        out.print(summarize(svc), markup=False, highlight=False)
    if any(svc.executor == "compose" for svc in cfg.services):
        from tools.base import ExecutorError
        from tools.compose_executor import find_compose_cli

        try:
            find_compose_cli()
        except ExecutorError as e:  # a warning: the config is fine, this machine may not be the one
            err.print(f"warning: {e}", markup=False)
    if cfg.llm.provider != "none":
        from agent.llm_client import resolve_endpoint

        ep = resolve_endpoint(cfg.llm, os.environ)
        out.print(f"llm: {ep.provider} model {ep.model} at {ep.base_url}", markup=False, highlight=False)
    out.print(f"ok: {len(cfg.services)} service(s), mode {cfg.mode}, state in {cfg.state_dir}", markup=False, highlight=False)


# ---------------------------------------------------------------------------- decide


@app.command()
@handles_errors
def decide(
    config: ConfigOpt = Path("docktor.yaml"),
    once: Annotated[bool, typer.Option("--once", help="Evaluate every service once (the only mode).")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and log, but never call the executor.")] = False,
    advisory: Annotated[bool, typer.Option("--advisory", help="Same as mode: advisory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One decision object per line.")] = False,
) -> None:
    """Observe, decide and (unless --dry-run or advisory) act, once for every service."""
    from agent.daemon import paths_for
    from agent.loop import Daemon

    cfg = _load(config, check_llm=True)

    async def run() -> list[Any]:
        daemon = Daemon(cfg, mode="advisory" if advisory else None, log_path=paths_for(cfg).decisions)
        try:
            await daemon.open()
            return await daemon.run_once(dry_run=dry_run)
        finally:
            await daemon.close()

    records = asyncio.run(run())
    if as_json:
        for r in records:
            sys.stdout.write(r.line().decode())
    else:
        _print_table(r.model_dump(mode="json") for r in records)


# ---------------------------------------------------------------------------- daemon


@daemon_app.command("start")
@handles_errors
def daemon_start(
    config: ConfigOpt = Path("docktor.yaml"),
    advisory: Annotated[bool, typer.Option("--advisory", help="Decide and log, never act.")] = False,
    foreground: Annotated[bool, typer.Option("--foreground", help="Stay attached (containers, systemd).")] = False,
) -> None:
    """Start the daemon (in the background unless --foreground)."""
    from agent import daemon

    cfg = _load(config, check_llm=True)
    mode = "advisory" if advisory else None
    try:
        if foreground:
            raise typer.Exit(daemon.run_foreground(cfg, mode=mode))
        pid = daemon.start_background(config, cfg, advisory=advisory)
    except daemon.AlreadyRunning as e:
        err.print(f"error: {e}; stop it with: docktor daemon stop --config {config}", markup=False)
        raise typer.Exit(1) from None
    paths = daemon.paths_for(cfg)
    out.print(f"started docktor (pid {pid}); decisions in {paths.decisions}; logs: docktor daemon logs --config {config} -f",
              markup=False, highlight=False)


@daemon_app.command("stop")
@handles_errors
def daemon_stop(config: ConfigOpt = Path("docktor.yaml")) -> None:
    """Stop the daemon; it finishes its current tick and flushes the log first."""
    from agent import daemon

    pid = daemon.stop(_load(config))
    out.print("not running" if pid is None else f"stopped docktor (pid {pid})", markup=False, highlight=False)


@daemon_app.command("status")
@handles_errors
def daemon_status(
    config: ConfigOpt = Path("docktor.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Is the daemon running; per service, its replicas and last decision."""
    from agent import daemon

    st = daemon.status(_load(config))
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


_SINCE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(text: str | None, now: float) -> float | None:
    """``10m``, ``2h``, ``30s``, ``1d`` ago, or an RFC 3339 timestamp."""
    if text is None:
        return None
    m = _SINCE.match(text.strip())
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    from agent.decision_log import parse_rfc3339

    try:
        return parse_rfc3339(text)
    except ValueError:
        raise UsageError(f"--since: {text!r} is neither a duration (10m, 2h, 30s) nor an RFC 3339 time") from None


@daemon_app.command("logs")
@handles_errors
def daemon_logs(
    config: ConfigOpt = Path("docktor.yaml"),
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new decisions.")] = False,
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only decisions newer than 10m, 2h, or a timestamp.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON lines.")] = False,
) -> None:
    """The decision log: a readable table, or raw JSON lines with --json."""
    from agent.daemon import paths_for
    from agent.decision_log import follow, log_files, read_records, read_records_in

    cfg = _load(config)
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
            _print_table(records)
        return
    # Following: rotated files first, then the live file from its start on one handle.
    rotated = [rec for f in log_files(path)[:-1] for rec in read_records_in(f, since=since_ts, service=service)]
    try:
        for rec in itertools.chain(rotated, follow(path, service=service, since=since_ts, from_start=True)):
            if as_json:
                sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
                sys.stdout.flush()
            else:
                out.print(_one_line(rec), markup=False, highlight=False)
    except KeyboardInterrupt:
        pass


def _arrow(rec: dict[str, Any]) -> str:
    return f"{rec.get('current_replicas', '?')}->{rec.get('target_replicas', '?')}"


def _outcome(rec: dict[str, Any]) -> str:
    if not rec.get("executed"):
        return "advisory" if rec.get("mode") in ("advisory", "dry-run") and rec.get("decision") != "hold" else "-"
    o = rec.get("outcome") or {}
    return f"{o.get('status', '?')} {o.get('duration_ms', 0):.0f}ms"


def _one_line(rec: dict[str, Any]) -> str:
    return (f"{rec.get('ts', '')}  {rec.get('service', ''):<12} {rec.get('decision', ''):<10} {_arrow(rec):<7} "
            f"{rec.get('source', ''):<8} {_outcome(rec):<12} {rec.get('reason', '')}")


def _print_table(records: Iterable[dict[str, Any]]) -> None:
    table = Table(show_lines=False)
    for name in ("time", "service", "decision", "replicas", "source", "outcome"):
        table.add_column(name, no_wrap=True)
    table.add_column("reason", ratio=1)
    n = 0
    for rec in records:
        n += 1
        style = {"scale_up": "green", "scale_down": "yellow"}.get(rec.get("decision", ""), "")
        outcome = _outcome(rec)
        if outcome.startswith("error"):
            style = "red"
        table.add_row(str(rec.get("ts", ""))[11:23], rec.get("service", ""), rec.get("decision", ""), _arrow(rec),
                      rec.get("source", ""), outcome, rec.get("reason", ""), style=style)
    if n == 0:
        out.print("no decisions yet", markup=False)
    else:
        out.print(table)


# ---------------------------------------------------------------------------- demo


@app.command()
@handles_errors
def demo(
    duration: Annotated[float, typer.Option("--duration", help="Seconds to run.", min=10)] = 140.0,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="Keep the decision log here.")] = None,
) -> None:
    """Scale a real NATS JetStream consumer under bursts, on this machine: no Docker, no LLM."""
    from agent.demo import run_demo

    raise typer.Exit(run_demo(duration=duration, state_dir=state_dir, console=out))


# ---------------------------------------------------------------------------- plugins

# Command groups that live beside their feature register themselves here.
for _module in ("agent.cli_llm", "agent.cli_sim"):
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as _e:
        if _e.name != _module:
            raise


#: Typer vendors click and re-exports only BadParameter; its base is every usage error's base.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except BrokenPipeError:  # `docktor daemon logs | head`: the reader left, which is fine
        sys.stderr.close()
        os._exit(0)
    except typer.Abort:
        sys.exit(1)
    except _ClickException as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            sys.exit(0)
        # One line naming the argument, like every other bad input (click's own box is five).
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {e.format_message()}{where}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
