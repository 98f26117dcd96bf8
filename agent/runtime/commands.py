"""What a running daemon can be told: pause, resume, scale, reload, status.

The control socket (:mod:`.control_socket`) and ``docktor mcp`` reach these; each command names
the service it acts on and is refused with a :class:`ControlRefused` carrying a code the caller
maps to its own protocol (``unknown_service``, ``bad_request``, ``not_allowed``,
``invalid_config``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docktor.agent.core.decide import finish, plan
from docktor.agent.core.guardrails import Envelope
from docktor.agent.core.proposal import Proposal
from docktor.agent.problems import UsageError
from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.persist import Pause
from docktor.agent.runtime.service_loop import decision_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from docktor.agent.config.model import DocktorConfig
    from docktor.agent.runtime.service_loop import ServiceLoop
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: a pause may last at most this long (ten years: longer is surely a typo)
MAX_PAUSE_S = 10 * 365 * 86400


class ControlRefused(Exception):
    """A control request that cannot be done as asked (``code`` for the control channel)."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or [message]


def loop_named(daemon: Supervisor, service: Any) -> ServiceLoop:
    if not isinstance(service, str) or service not in daemon.loops:
        known = ", ".join(sorted(daemon.loops)) or "none"
        raise ControlRefused("unknown_service", f"no service named {service!r} (services: {known})")
    return daemon.loops[service]


async def pause(daemon: Supervisor, service: Any, for_s: Any = None, reason: str = "") -> dict[str, Any]:
    """Stop acting on ``service`` (for ``for_s`` seconds, or until resumed); decisions go on."""
    loop = loop_named(daemon, service)
    if for_s is not None and not (isinstance(for_s, int | float) and not isinstance(for_s, bool) and 0 < for_s < MAX_PAUSE_S):
        raise ControlRefused("bad_request", f"for_s: must be a positive number of seconds, got {for_s!r}")
    now = daemon.wall()
    loop.pause = Pause(now, None if for_s is None else now + float(for_s), str(reason or "")[:200])
    log.info("%s: paused %s%s", loop.name, loop.pause.text(), f" ({loop.pause.reason})" if loop.pause.reason else "")
    await loop.save_state()
    daemon.status_file.write()
    return {"service": loop.name, "paused": loop.pause.as_dict()}


async def resume(daemon: Supervisor, service: Any) -> dict[str, Any]:
    loop = loop_named(daemon, service)
    was, loop.pause = loop.pause, None
    if was is not None:
        log.info("%s: resumed (was paused %s)", loop.name, was.text())
    await loop.save_state()
    daemon.status_file.write()
    return {"service": loop.name, "was_paused": None if was is None else was.as_dict()}


def _how_to_act(daemon: Supervisor, source: str) -> str:
    """What the refusal of an advisory daemon suggests: what really makes it act (the --advisory
    flag outlives a reload, the config's mode does not), and what shows the would-be decision."""
    act = ("to act, restart it without --advisory" if daemon.mode_override
           else "to act, set mode: autonomous in its config and run docktor daemon reload")
    # `docktor scale` has no dry run; an MCP client has propose_scale
    return act + ("; propose_scale says what it would do" if source == "mcp" else "")


async def scale_to(daemon: Supervisor, service: Any, replicas: Any, *, reason: str = "", source: str = "manual",
                   dry_run: bool = False) -> DecisionRecord:
    """A decision asked for from outside (``docktor scale``, MCP).

    ``manual``: an operator's override, clamped by min/max only (like ``kubectl scale`` on a
    workload an autoscaler also drives: the next automatic decisions may move it again, so
    pause first to keep it). ``mcp``: an assistant's proposal, clamped into the envelope every
    decision is (bounds, step limits, cooldowns, stabilization, back-off, the rules'
    direction), but not into the LLM advisor's narrower one (this tick's direction, the
    ``llm:`` allowance): an assistant speaks for a person (docs/operations.md, "MCP").
    Recorded with that ``source``; with ``dry_run``, only returned.
    """
    loop = loop_named(daemon, service)
    if source not in ("manual", "mcp"):
        raise ControlRefused("bad_request", f"source: must be manual or mcp, got {source!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ControlRefused("bad_request", f"replicas: must be a whole number >= 0, got {replicas!r}")
    if not dry_run and daemon.mode != "autonomous":
        raise ControlRefused("not_allowed", f"the daemon runs in {daemon.mode} mode: it never acts ({_how_to_act(daemon, source)})")
    svc = loop.svc
    # One line, bounded: the reason is quoted into the decision log and every reader's table.
    why = " ".join(str(reason or "").split())[:300] or ("docktor scale" if source == "manual" else "no reason given")
    async with loop.lock:
        paused = loop.active_pause()
        if paused is not None and source == "mcp" and not dry_run:
            # An assistant never acts on a paused service (an operator's ``docktor scale`` may: it
            # is the override a pause during an incident is for).
            raise ControlRefused("not_allowed", f"{loop.name} is paused {paused.text()}: nothing is executed "
                                                f"(docktor resume {loop.name})")
        observations, status, errors = await loop.observe()
        loop.last_observations, loop.last_status = observations, status
        if status is None:
            raise ControlRefused("not_allowed", f"{loop.name}: replica count unavailable, not scaling: {'; '.join(errors)}")
        now = daemon.mono()
        p = plan(svc, observations, status.desired, loop.state, now)
        env = p.envelope if source == "mcp" else Envelope(svc.min_replicas, svc.max_replicas, "min_replicas", "max_replicas")
        decision = finish(svc, p, Proposal(replicas, f"{source}: {why}"), source, envelope=env)  # type: ignore[arg-type]
        mode = "dry-run" if dry_run else daemon.mode
        record = DecisionRecord.from_decision(decision, mode=mode, ts=daemon.wall(), errors=errors, id=decision_id())
        if dry_run:
            return record if paused is None else record.model_copy(update={"paused": paused.as_dict()})
        record = await loop.conclude(decision, record, now, decision.changes)
    await loop.save_state()
    return record


async def reload_from(daemon: Supervisor, path: Path,
                      complete: Callable[[DocktorConfig], DocktorConfig] | None = None) -> dict[str, Any]:
    """Re-read ``path``, validate it as ``daemon start`` does, and reconcile the daemon with it;
    a bad config raises ControlRefused(``invalid_config``) with its one-line problems, and the
    daemon keeps the one it runs. ``complete`` adds what the file does not list (the services
    the Swarm labels name)."""
    from docktor.agent.runtime.process import load_for_run

    try:
        config = await asyncio.to_thread(load_for_run, path)
    except UsageError as e:
        raise ControlRefused("invalid_config", f"{path}: the config has errors; still running the previous one",
                             [str(p) for p in e.problems]) from None
    for w in config.warnings:
        log.warning("config: %s", w)
    return await daemon.reload(config if complete is None else complete(config))


def control_handler(daemon: Supervisor, reload: Callable[[], Awaitable[dict[str, Any]]]
                    ) -> Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The control channel's commands, on ``daemon``; ``reload`` re-reads the config file."""
    from docktor.agent.runtime.control_socket import ControlError

    async def handle(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        try:
            if cmd == "ping":
                return {"pid": os.getpid(), "protocol": 1}
            if cmd == "status":
                return daemon.status()
            if cmd == "pause":
                return await pause(daemon, args.get("service"), args.get("for_s"), str(args.get("reason") or ""))
            if cmd == "resume":
                return await resume(daemon, args.get("service"))
            if cmd == "scale":
                record = await scale_to(
                    daemon, args.get("service"), args.get("replicas"), reason=str(args.get("reason") or ""),
                    source=str(args.get("source") or "manual"), dry_run=bool(args.get("dry_run", False)),
                )
                return {"record": record.model_dump(mode="json", exclude_none=True)}
            if cmd == "reload":
                return await reload()
        except ControlRefused as e:
            raise ControlError(e.code, e.message, e.problems) from None
        raise ControlError("bad_request", f"unknown command {cmd!r} (ping, status, pause, resume, scale, reload)")

    return handle
