"""The MCP server: Docktor's tools over the official MCP Python SDK (``mcp`` 2.x), on stdio or
streamable HTTP. The tools themselves are :class:`~docktor.agent.mcp.views.DaemonView`'s.

Every input is checked against the tool's schema by the SDK, and its errors are turned here into
one line naming the argument; an unknown argument is refused rather than ignored. Every answer is
compact JSON text, with the same object as structured content.
"""

# No ``from __future__ import annotations``: the SDK reads the tools' annotations at run time.

import inspect
import logging
import socket
import sys
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from docktor.agent import __version__
from docktor.agent.mcp.auth import RequireBearer, Token
from docktor.agent.mcp.views import (
    DECISION_ID_PATTERN,
    MAX_DECISIONS,
    MAX_EXPLAINED,
    MAX_MINUTES,
    MAX_POINTS,
    METRIC_PATTERN,
    SERVICE_PATTERN,
    DaemonView,
    ToolFailure,
    clip,
    dumps,
)
from docktor.agent.redact import redact

log = logging.getLogger("docktor.mcp")

Service = Annotated[str, Field(
    description="The service, as named in the config (list_services names them).",
    min_length=1, max_length=128, pattern=SERVICE_PATTERN,
)]
SomeService = Annotated[str | None, Field(
    description="Only this service (default: every service).", max_length=128, pattern=SERVICE_PATTERN,
)]
Replicas = Annotated[int, Field(description="The replica count asked for (a whole number >= 0).", strict=True, ge=0, le=100_000)]
Reason = Annotated[str, Field(
    description="Why, in one line (newlines become spaces); recorded with the decision when applied.",
    min_length=1, max_length=300,
)]
Metric = Annotated[str, Field(
    description="An observation's name, as get_metrics lists them: queue.backlog, queue.rate_in, replicas.running, ...",
    min_length=1, max_length=200, pattern=METRIC_PATTERN,
)]
Minutes = Annotated[float, Field(description=f"How far back, in minutes (up to {MAX_MINUTES}).", strict=True, gt=0, le=MAX_MINUTES)]
MaxPoints = Annotated[int, Field(
    description=f"At most this many points (1-{MAX_POINTS}); more are evenly downsampled.", strict=True, ge=1, le=MAX_POINTS,
)]
Limit = Annotated[int, Field(description=f"How many decisions, newest last (1-{MAX_DECISIONS}).", strict=True, ge=1, le=MAX_DECISIONS)]
ChangesOnly = Annotated[bool, Field(description="Only decisions that changed the replica count.", strict=True)]
DecisionId = Annotated[str | None, Field(
    description="A decision's id (get_recent_decisions shows them); default: the newest decisions.",
    max_length=32, pattern=DECISION_ID_PATTERN,
)]
Count = Annotated[int, Field(description=f"How many of the newest decisions to explain (1-{MAX_EXPLAINED}).", strict=True, ge=1, le=MAX_EXPLAINED)]

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

INSTRUCTIONS = """\
Docktor autoscales queue workers (Docker Compose, Swarm, local processes) on queue depth and
throughput, and explains every decision. These tools read a running Docktor daemon: its services
and their state, what it observes, its decision log in prose. propose_scale asks what the
guardrails (min/max, step limits, cooldowns, stabilization, back-off, the rules' direction) would
execute for a replica count, without acting. apply_scale, when this server offers it, asks the
daemon to scale inside the same guardrails and records the decision with source mcp and your
reason. Observations are what the daemon read at its last tick: nothing here reads a queue on demand.
"""


def _answer(result: dict[str, Any], text: str | None = None) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text if text is not None else dumps(result))],
                          structured_content=result)


def _validation_line(tool: str, e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "missing":
            parts.append(f"{where}: required")
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
            parts.append(f"{where}: {msg}, got {clip(repr(err.get('input')), 80)}")
    return clip(f"{tool}: " + "; ".join(parts), 1000)


class DocktorMCP(MCPServer[Any]):
    """An MCPServer whose tool errors are one line each and whose tools refuse unknown arguments."""

    def __init__(self, view: DaemonView):
        super().__init__("docktor", title="Docktor", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
        self.view = view
        self._arguments: dict[str, list[str]] = {}

    def add(self, fn: Callable[..., Any], title: str, annotations: ToolAnnotations) -> None:
        name = fn.__name__
        self._arguments[name] = list(inspect.signature(fn).parameters)
        self.add_tool(fn, name=name, title=title, annotations=annotations, structured_output=False)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        known = self._arguments.get(name)
        if known is None:
            if name == "apply_scale":
                raise ToolError(f"apply_scale is off: this server runs without mcp.allow_apply: true in "
                                f"{self.view.config_path}, so it does not offer it (propose_scale says what it would do)")
            raise ToolError(f"unknown tool {clip(name, 80)!r} (tools: {', '.join(self._arguments)})")
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise ToolError(f"{name}: unknown argument {clip(unknown[0], 80)!r} (arguments: {', '.join(known) or 'none'})")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            cause = e.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_validation_line(name, cause)) from None
            if isinstance(cause, ToolFailure):
                raise ToolError(redact(f"{name}: {cause}")) from None
            raise


def build(view: DaemonView) -> DocktorMCP:
    """The server and its tools; ``apply_scale`` only when ``view.allow_apply``."""
    server = DocktorMCP(view)

    async def list_services() -> CallToolResult:
        """Every service the daemon runs, with its state: policy, bounds (min/max replicas), replicas
        (desired, running, failed), whether it is paused, the cooldowns and back-off holding it and
        the seconds each has left, and its last decision."""
        return _answer(await view.services())

    async def get_metrics(service: Service) -> CallToolResult:
        """What the daemon observed for a service at its last tick: every metric (queue.backlog,
        queue.rate_in/rate_out, per-replica throughput, replicas.*, cpu/mem where the executor
        has them), the metrics that were missing and any source or executor errors."""
        return _answer(await view.metrics(service))

    async def get_metric_history(service: Service, metric: Metric, minutes: Minutes = 60.0,
                                 max_points: MaxPoints = 60) -> CallToolResult:
        """One metric of a service over the last minutes, from the observations recorded with each
        decision: [timestamp, value] points (evenly downsampled to max_points) and min/max/mean/last."""
        return _answer(await view.history(service, metric, minutes, max_points))

    async def get_recent_decisions(service: SomeService = None, limit: Limit = 10,
                                   changes_only: ChangesOnly = False) -> CallToolResult:
        """The newest decisions from the decision log (newest last), redacted: observations, rules
        matched, proposal and its source (rules, policy, llm, manual, mcp), each guardrail that
        changed it, whether it was executed and the outcome."""
        return _answer(await view.decisions(service, limit, changes_only))

    async def explain_decision(service: SomeService = None, decision_id: DecisionId = None,
                               count: Count = 1) -> CallToolResult:
        """A decision in prose, as `docktor explain` writes it: what was observed, which rules
        matched, what was proposed and by whom, which guardrail changed it and for how long, what
        was executed and how it went. By id, or the newest decisions (of a service)."""
        result = await view.explain(service, decision_id, count)
        return _answer(result, text=result["text"] + (f"\n\n({result['daemon']})" if result.get("daemon") else ""))

    async def propose_scale(service: Service, n: Replicas, reason: Reason) -> CallToolResult:
        """What the guardrails would execute if the service were asked for n replicas now, and why
        (which guardrail clamps it and how long it holds), without acting or recording anything."""
        return _answer(await view.propose(service, n, reason))

    server.add(list_services, "Services and their state", READ_ONLY)
    server.add(get_metrics, "Current metrics of a service", READ_ONLY)
    server.add(get_metric_history, "Metric history of a service", READ_ONLY)
    server.add(get_recent_decisions, "Recent decisions", READ_ONLY)
    server.add(explain_decision, "Explain a decision", READ_ONLY)
    server.add(propose_scale, "Propose a replica count (dry run)", READ_ONLY.model_copy(update={"idempotent_hint": False}))

    if view.allow_apply:
        async def apply_scale(service: Service, n: Replicas, reason: Reason) -> CallToolResult:
            """Ask the daemon for n replicas of a service. It is clamped into the same guardrails as
            every decision (see propose_scale), executed, and recorded in the decision log with
            source mcp and your reason. Refused while the service is paused or the daemon is advisory."""
            result = await view.apply(service, n, reason)
            done = f"{result.get('from')} -> {result.get('to')}" if result.get("executed") else f"held at {result.get('to')}"
            log.info("apply_scale %s: %s (asked %d; decision %s): %s", service, done, n, result.get("decision_id"), result.get("reason"))
            return _answer(result)

        server.add(apply_scale, "Scale a service (inside the guardrails)",
                   ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False))
    return server


# --------------------------------------------------------------------------- transports


async def serve_stdio(server: DocktorMCP) -> None:
    await server.run_stdio_async()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts (a port in use is a clear error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"


async def serve_http(server: DocktorMCP, sock: socket.socket, token: Token | None) -> None:
    """Streamable HTTP at ``/mcp`` on ``sock``, until SIGINT/SIGTERM; every request must carry
    ``token`` as a bearer token (:mod:`docktor.agent.mcp.auth`), unless it is None
    (``mcp.http_auth: none``, which the config allows only without ``allow_apply``)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    loopback = host in ("127.0.0.1", "[::1]") or host.startswith("127.")
    # DNS rebinding: a web page must not reach a loopback server through a name it controls. A
    # server allowed beyond this host is reached by names we cannot know; it serves reads only.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=loopback,
        allowed_hosts=[f"{h}:*" for h in {host, "127.0.0.1", "localhost", "[::1]"}],
        allowed_origins=[f"http://{h}:*" for h in {host, "127.0.0.1", "localhost", "[::1]"}],
    )
    app: Any = server.streamable_http_app(streamable_http_path="/mcp", transport_security=security, host=str(host))
    if token is not None:
        app = RequireBearer(app, token.value)
    elif server.view.allow_apply:  # the config refuses http_auth: none with allow_apply; never serve it anyway
        raise RuntimeError("refusing to serve apply_scale over HTTP without a bearer token")
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    apply = "apply_scale offered" if server.view.allow_apply else "apply_scale off"
    auth = f"bearer token from {token.origin}" if token is not None else "no authentication: mcp.http_auth is none"
    print(f"docktor mcp: serving {url_of(sock)} (streamable HTTP; {auth}) for {server.view.config_path} ({apply})",
          file=sys.stderr, flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])
