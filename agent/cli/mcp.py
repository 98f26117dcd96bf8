"""``docktor mcp``: serve a running daemon's tools to an assistant over the Model Context Protocol."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Annotated

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, config_file, handles_errors, load
from docktor.agent.problems import Problem, UsageError


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    @app.command(short_help="Serve the daemon's tools to an assistant over MCP (stdio or HTTP).")
    @handles_errors
    def mcp(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        http: Annotated[str | None, typer.Option(
            "--http", metavar="HOST:PORT",
            help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (loopback unless mcp.allow_remote); "
                 "every request needs 'Authorization: Bearer TOKEN' (from $DOCKTOR_MCP_TOKEN, else state_dir/mcp.token, "
                 "made and shown once when absent).",
        )] = None,
    ) -> None:
        """An MCP server for the daemon of this config: read-only tools (services and their state,
        metrics, metric history, recent decisions, explain), propose_scale (what the guardrails
        would execute, without acting) and, with mcp.allow_apply: true, apply_scale (through the
        daemon, inside the same guardrails, recorded with source mcp). Speaks stdio by default, for
        an MCP client that starts it (Claude Desktop and the like); over --http, only to clients
        that send its bearer token."""
        config = config_file(config, compose)
        import asyncio
        import importlib.util
        import logging

        if importlib.util.find_spec("mcp") is None:
            raise UsageError("the mcp package is not installed: pip install 'mcp>=2.3,<3' (or install docktor with its dependencies)")
        from docktor.agent.mcp.address import http_address
        from docktor.agent.mcp.auth import resolve_token
        from docktor.agent.mcp.server import bind, build, serve_http, serve_stdio
        from docktor.agent.mcp.views import DaemonView
        from docktor.agent.runtime.foreground import RedactingFilter
        from docktor.agent.runtime.locate import locate

        cfg = load(config)
        sock = None
        if http is not None:
            host, port = http_address(http, allow_remote=cfg.mcp.allow_remote, allow_apply=cfg.mcp.allow_apply)
            try:
                sock = bind(host, port)
            except OSError as e:
                raise UsageError([Problem("--http", f"cannot listen on {http}: {e.strerror or e}")]) from None

        # stdout is the protocol's on stdio: every log line goes to stderr, scrubbed of secrets.
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter())
        logging.getLogger("docktor").setLevel(logging.INFO)

        view = DaemonView(config, cfg, locate(config).paths, allow_apply=cfg.mcp.allow_apply, locate=lambda: locate(config).paths)
        server = build(view)
        apply = "apply_scale offered" if cfg.mcp.allow_apply else "apply_scale off"
        try:
            if sock is None:
                # stdio needs no token: the client started this process, as this user
                print(f"docktor mcp: serving stdio for {config} (state in {view.paths.state_dir}; {apply})", file=sys.stderr, flush=True)
                asyncio.run(serve_stdio(server))
            else:
                # after the bind: a port in use is refused before a token is made and shown
                token = resolve_token(cfg, os.environ)
                # uvicorn stops on SIGTERM, then raises the signal again under the handler it found:
                # the default one would end this process by the signal (exit -15), not as Ctrl-C does
                signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
                asyncio.run(serve_http(server, sock, token))
        except KeyboardInterrupt:
            pass
        finally:
            if sock is not None:
                sock.close()
