"""The ``docktor`` command line: the app, ``decide`` and ``demo``; ``validate`` and the groups register here.

Every bad input ends the same way: one line per problem on stderr, naming the field or argument,
and exit code 2. Commands import what they need when they run, so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from docktor.agent.cli import control as control_commands
from docktor.agent.cli import daemon as daemon_commands
from docktor.agent.cli import explain as explain_command
from docktor.agent.cli import keda_command
from docktor.agent.cli import llm as llm_commands
from docktor.agent.cli import mcp as mcp_command
from docktor.agent.cli import sim as sim_commands
from docktor.agent.cli import validate as validate_command
from docktor.agent.cli.common import ConfigOpt, group, handles_errors, load

app = group("Scale queue workers on queue depth and throughput, with every decision explained.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"docktor {version('docktor')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Scale queue workers on queue depth and throughput, with every decision explained."""


# ---------------------------------------------------------------------------- validate


validate_command.register(app)  # first in --help, as the first command a user runs


# ---------------------------------------------------------------------------- decide


@app.command(short_help="Observe and decide once, for every service.")
@handles_errors
def decide(
    config: ConfigOpt = Path("docktor.yaml"),
    once: Annotated[bool, typer.Option("--once", help="Evaluate every service once (the only mode).")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and log, but never call the executor.")] = False,
    advisory: Annotated[bool, typer.Option("--advisory", help="Same as mode: advisory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One decision object per line.")] = False,
    window: Annotated[str, typer.Option(
        "--window", help="Read twice this far apart, so rates are known (at most each check interval; 0: read once; "
        "a service whose sources have no rates is read once)."
    )] = "5s",
) -> None:
    """Observe, decide and (unless --dry-run or advisory) act, once for every service."""
    import asyncio

    from docktor.agent.problems import UsageError
    from docktor.tools.sdk import parse_duration

    try:
        window_s = float(parse_duration(window))
    except (ValueError, TypeError):
        raise UsageError(f"--window: {window!r} is not a duration (e.g. 5s, 500ms, 0)") from None

    from docktor.agent.cli.render import print_table
    from docktor.agent.runtime.process import AlreadyRunning, acquire_lock, paths_for, trusted
    from docktor.agent.runtime.rundir import TargetBusy
    from docktor.agent.runtime.supervisor import Supervisor

    cfg = load(config, check_llm=True)
    trusted(paths_for(cfg), create=True)  # the log and the state files go there, dry run or not
    acts = not dry_run and not advisory and cfg.mode == "autonomous"
    lock_fd = -1
    if acts:
        # Never behind a running daemon's back: its replicas, its cooldowns, its log.
        _refuse_in_process(cfg)
        try:
            lock_fd = acquire_lock(paths_for(cfg), what="decide --once", config=config)
        except AlreadyRunning as e:
            raise typer.Exit(_refused(f"{e}: it owns the scaling; ask it (docktor scale SERVICE --to N --config {e.config or config}) "
                                      "or use --dry-run")) from None

    async def run() -> list[Any]:
        daemon = Supervisor(cfg, mode="advisory" if advisory else None, log_path=paths_for(cfg).decisions,
                            state="write" if acts else "read")
        try:
            await daemon.open()
            if acts:
                daemon.claim_targets("decide --once")
            return await daemon.run_once(dry_run=dry_run, window=window_s)
        finally:
            await daemon.close()

    try:
        records = asyncio.run(run())
    except TargetBusy as e:
        where = f"service {e.holder.get('service')}: " if e.holder.get("service") else ""
        holder_config = e.holder.get("config") or "its config"
        raise typer.Exit(_refused(f"{where}{e}: it owns the scaling; ask it (docktor scale SERVICE --to N --config "
                                  f"{holder_config}) or use --dry-run")) from None
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
    if as_json:
        for r in records:
            sys.stdout.write(r.line().decode())
    else:
        from docktor.agent.cli.render import say
        from docktor.agent.runtime.prose import tick_text

        print_table(r.model_dump(mode="json") for r in records)
        # apart from the table: what each service's policy wants, and what this tick would do
        for r in records:
            wants = tick_text(r.model_dump(mode="json"))
            if wants is not None:
                idle = r.executed or r.decision == "hold"
                say(f"{r.service}: {wants}" + ("" if idle else f" ({r.mode}: not executed)"))


def _refuse_in_process(cfg: Any) -> None:
    """``decide --once`` cannot act on replicas that live inside a daemon process (``in_process``
    executors): they would stop when the command exits."""
    from docktor.agent.problems import Problem, UsageError
    from docktor.tools.registry import executor_plugin

    problems = [
        Problem(f"services[{i}] ({svc.name})",
                f"executor {svc.executor.kind} runs its replicas inside the daemon: decide --once would stop them when it "
                f"exits; use --dry-run, or start the daemon and ask it: docktor scale {svc.name} --to N")
        for i, svc in enumerate(cfg.services)
        if svc.executor is not None and executor_plugin(svc.executor.kind).in_process
    ]
    if problems:
        raise UsageError(problems)


def _refused(text: str) -> int:
    from docktor.agent.redact import redact

    print(f"error: {redact(text)}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------- demo


@app.command(short_help="Scale a real NATS consumer on this machine.")
@handles_errors
def demo(
    duration: Annotated[float, typer.Option("--duration", help="Seconds to run.", min=10)] = 140.0,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="Keep the decision log here.")] = None,
) -> None:
    """Scale a real NATS JetStream consumer under bursts, on this machine: no Docker, no LLM."""
    from docktor.agent.cli.render import out
    from docktor.agent.demo.run import run_demo

    raise typer.Exit(run_demo(duration=duration, state_dir=state_dir, console=out))


# ---------------------------------------------------------------------------- groups

daemon_commands.register(app)
explain_command.register(app)
control_commands.register(app)
llm_commands.register(app)
mcp_command.register(app)
keda_command.register(app)
sim_commands.register(app)


#: Typer vendors click and re-exports only BadParameter; its base is every usage error's base.
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    try:
        code = app(prog_name="docktor", standalone_mode=False)
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
        print(f"error: {e.format_message()}{where}", file=sys.stderr)  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
