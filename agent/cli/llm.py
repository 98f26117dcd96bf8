"""``docktor llm check``: is the configured LLM endpoint usable, and what does it support?

Exit 0: usable; 1: not usable; 2: bad input. The check itself is :mod:`docktor.agent.advisor.check`.
"""

from __future__ import annotations

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, config_file, group, handles_errors, load


def register(app: typer.Typer) -> None:
    """Add the ``llm`` command group to the main CLI."""
    llm_app = group("Check the LLM endpoint the advisor uses.")

    @llm_app.command("check", short_help="Try the endpoint the advisor uses.")
    @handles_errors
    def check(config: ConfigOpt = None, compose: ComposeOpt = None) -> None:
        """List the endpoint's models and try one structured answer and one tool call."""
        config = config_file(config, compose)
        import asyncio
        import os

        from docktor.agent.advisor.check import run_check
        from docktor.agent.advisor.client import config_endpoint
        from docktor.agent.redact import redact

        cfg = load(config)
        endpoint = config_endpoint(cfg, os.environ)
        typer.echo(f"found: {endpoint.found}")
        lines, usable = asyncio.run(run_check(cfg.llm, endpoint))
        for line in lines:
            typer.echo(redact(line))
        typer.echo("usable: yes" if usable else "usable: no")
        raise typer.Exit(0 if usable else 1)

    app.add_typer(llm_app, name="llm")
