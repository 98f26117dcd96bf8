"""``docktor pause|resume|scale``: tell a running daemon what to do, over its control socket."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, config_file, handles_errors
from docktor.agent.cli.daemon import call_daemon
from docktor.agent.problems import UsageError

ServiceArg = Annotated[str, typer.Argument(metavar="SERVICE", help="The service, as named in the config.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded with the decision or the pause).")]


def register(app: typer.Typer) -> None:
    @app.command(short_help="Stop acting on a service; decisions go on and are logged.")
    @handles_errors
    def pause(
        service: ServiceArg,
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        for_: Annotated[str | None, typer.Option("--for", metavar="DURATION", help="Resume by itself after this long (30m, 2h).")] = None,
        reason: ReasonOpt = "",
    ) -> None:
        """Pause a service (like KEDA's paused annotation): the daemon keeps deciding and logging, with
        "paused" on each decision, and executes nothing until the pause ends or `docktor resume`.
        A pause survives a restart of the daemon and a reload."""
        config = config_file(config, compose, missing_ok=True)
        from docktor.agent.cli.render import say

        seconds = None if for_ is None else _duration("--for", for_)
        result = call_daemon(config, lambda c: c.pause(service, seconds, reason))
        until = result["paused"].get("until")
        say(f"paused {service} {'until ' + until if until else 'until resumed'}: decisions go on and are logged, "
            f"nothing is executed (docktor resume {service})")

    @app.command(short_help="Resume a paused service.")
    @handles_errors
    def resume(service: ServiceArg, config: ConfigOpt = None, compose: ComposeOpt = None) -> None:
        """End a pause: the next decision acts again."""
        config = config_file(config, compose, missing_ok=True)
        from docktor.agent.cli.render import say

        result = call_daemon(config, lambda c: c.resume(service))
        say(f"resumed {service}" if result.get("was_paused") else f"{service} was not paused")

    @app.command(short_help="Set a service's replicas by hand, through the daemon.")
    @handles_errors
    def scale(
        service: ServiceArg,
        to: Annotated[int, typer.Option("--to", metavar="N", min=0, help="The replica count (clamped to min/max).")],
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        reason: ReasonOpt = "",
        as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    ) -> None:
        """A manual decision: the daemon clamps N to the service's min/max (no other guardrail),
        carries it out and records it with source "manual". Automatic decisions may move the count
        again later (cooldowns count from this one): pause the service first to keep it."""
        config = config_file(config, compose, missing_ok=True)
        import json

        from docktor.agent.cli.render import say

        result = call_daemon(config, lambda c: c.scale(service, to, reason=reason))
        rec: dict[str, Any] = result["record"]
        if as_json:
            sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
        else:
            say(_scale_line(rec))
        outcome = rec.get("outcome") or {}
        if outcome.get("status") == "error":
            raise typer.Exit(1)


def _duration(option: str, text: str) -> float:
    from docktor.tools.sdk import parse_duration

    try:
        seconds = float(parse_duration(text))
    except (ValueError, TypeError):
        raise UsageError(f"{option}: {text!r} is not a duration (e.g. 30m, 2h, 90s)") from None
    if seconds <= 0:
        raise UsageError(f"{option}: must be more than 0, got {text!r}")
    return seconds


def _scale_line(rec: dict[str, Any]) -> str:
    cur, target = rec.get("current_replicas"), rec.get("target_replicas")
    head = f"{rec.get('service')}: {rec.get('decision')} {cur} -> {target} ({rec.get('reason')})"
    outcome = rec.get("outcome")
    if not rec.get("executed") or outcome is None:
        return f"{head}: nothing to do" if cur == target else head
    return f"{head}: {outcome.get('status')}: {outcome.get('message')}"
