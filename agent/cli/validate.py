"""``docktor validate``: the config checked offline and, with ``--connect``, against the systems it names.

Every problem is found in one round and printed as one ``error:`` line naming the field (exit 2):
the config's own mistakes (the loader), then what this machine says will fail (a file or a program
that does not exist, a variable that is not set: :mod:`docktor.agent.config.checks`), then, with
``--connect``, what the systems answer (:mod:`docktor.agent.runtime.probe`).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, config_file, handles_errors, load


def register(app: typer.Typer) -> None:
    @app.command(short_help="Check a config file (--connect: and the systems it names).")
    @handles_errors
    def validate(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        connect: Annotated[bool, typer.Option(
            "--connect", help="Also read every source once and ask every executor its status (nothing is scaled)."
        )] = False,
        timeout: Annotated[str, typer.Option(
            "--timeout", metavar="DURATION", help="With --connect: how long each source or executor may take (e.g. 5s)."
        )] = "5s",
    ) -> None:
        """Check a config file: a summary line per service, or one line per problem (exit 2)."""
        config = config_file(config, compose)
        from docktor.agent.cli.render import say, warn
        from docktor.agent.config.checks import offline_checks
        from docktor.agent.config.load import summarize
        from docktor.agent.problems import UsageError
        from docktor.tools.sdk import parse_duration

        try:
            timeout_s = float(parse_duration(timeout))
        except (ValueError, TypeError):
            raise UsageError(f"--timeout: {timeout!r} is not a duration (e.g. 5s, 500ms)") from None
        if not 0 < timeout_s <= 300:
            raise UsageError(f"--timeout: {timeout!r} must be more than 0 and at most 300s")

        cfg = load(config, check_llm=True)
        found = offline_checks(cfg)
        for svc in cfg.services:
            say(summarize(svc))
        for line in found.warnings:
            warn(line)
        problems = found.refusals + found.problems
        if connect:
            import asyncio

            from docktor.agent.runtime.probe import probe

            for answer in asyncio.run(probe(cfg, timeout_s)):
                if answer.problem is not None:
                    problems.append(answer.problem)
                else:
                    say(f"{answer.service}: {answer.who}: {answer.said}")
        if problems:
            raise UsageError(problems)
        if cfg.llm.provider != "none":
            from docktor.agent.advisor.client import config_endpoint

            ep = config_endpoint(cfg, os.environ)
            say(f"llm: {ep.provider} model {ep.model} at {ep.base_url} ({ep.found})")
        elif os.environ.get(var := cfg.llm.endpoint_vars()[0]):
            # Compose gave this container a model, and nothing asks for it: never an advisor by surprise
            say(f"llm: none ({var} is set, as Compose's models: sets it; llm: {{from: compose}} would use it)")
        answered = ", every source and executor answered" if connect else ""
        discovered = (f" (and the Swarm services labelled docktor.enable=true, looked for every {cfg.discover.interval:g}s)"
                 if cfg.discover.swarm_labels else "")
        say(f"ok: {len(cfg.services)} service(s){discovered}, mode {cfg.mode}, state in {cfg.state_dir}{answered}")
