"""``docktor explain``: the last decisions in prose, each with the observations that drove it.

For every decision: what was observed, which rules matched, what the policy (or the LLM)
proposed, which guardrail changed it and for how long, what was executed and whether it worked,
and what went wrong observing it. The Go Docktor's users know the command; here it reads the
decision log, so it explains the daemon's decisions and ``decide``'s alike.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, config_file, handles_errors, load
from docktor.agent.problems import UsageError


def register(app: typer.Typer) -> None:
    @app.command(short_help="The last decisions, explained in prose.")
    @handles_errors
    def explain(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        tail: Annotated[int, typer.Option("--tail", "-n", min=1, metavar="N", help="How many decisions (default 5).")] = 5,
        service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
        changes: Annotated[bool, typer.Option("--changes", help="Only decisions that changed the replica count.")] = False,
        since: Annotated[str | None, typer.Option("--since", help="Only decisions newer than 10m, 2h, or a timestamp.")] = None,
    ) -> None:
        """The last decisions in prose: what was observed, which rules matched, what was proposed,
        which guardrail changed it, what was executed and whether it worked."""
        config = config_file(config, compose)

        from docktor.agent.cli.daemon import parse_since
        from docktor.agent.cli.render import say
        from docktor.agent.redact import redact_obj
        from docktor.agent.runtime.log_reader import scan_log
        from docktor.agent.runtime.process import paths_for
        from docktor.agent.runtime.prose import explain_one

        cfg = load(config)
        if service is not None and service not in {s.name for s in cfg.services}:
            raise UsageError(f"--service: no service named {service!r} in {config}")
        # read from the end of the log: the last few decisions of a big log cost what they weigh
        want = (lambda r: r.get("decision") != "hold") if changes else None
        last = scan_log(paths_for(cfg).decisions, service=service, limit=tail, since=parse_since(since, time.time()),
                        want=want).records
        if not last:
            say("no decisions yet" + (f" for {service}" if service else ""))
            return
        for i, rec in enumerate(last):
            if i:
                say("")
            for line in explain_one(redact_obj(rec)):
                say(line)
