"""What ``docktor mcp`` tells an assistant, without the MCP SDK (``server.py`` wires these into tools).

Two places hold the truth, and each answer says which it came from:

* the running daemon, through its control socket (:mod:`docktor.agent.runtime.control_socket`): the
  services' live state, and proposals and scale requests, which the daemon clamps into the same
  envelope as its own decisions. With no daemon running these fail with one line saying so;
* the decision log in ``state_dir``, read from its end (never whole): the last tick's
  observations, metric history, decisions and their explanation. These answer from the log a
  stopped daemon left, and say that it is stopped.

Every answer is bounded (strings, lists, the whole answer's size) and redacted again here: the
log is already scrubbed when written, but this process registers the config's secrets too, so a
credential that reached a record some other way is masked before it reaches a model.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig
from docktor.agent.redact import redact_obj
from docktor.agent.runtime.control_socket import AsyncControlClient, ControlError, ControlUnavailable
from docktor.agent.runtime.log_reader import Scan, scan_log
from docktor.agent.runtime.process import Paths, running_pid
from docktor.agent.timestamps import parse_rfc3339

#: one tool answer, as JSON text: a model's context is the budget
MAX_ANSWER_CHARS = 32_000
#: one string in an answer (a reason, an error, an LLM's justification)
MAX_TEXT_CHARS = 300
#: items of one list inside a record (errors, rules, guardrails), keys of one mapping
MAX_LIST_ITEMS = 20
MAX_OBSERVATIONS = 80
MAX_SERVICES = 100
MAX_DECISIONS = 50
MAX_EXPLAINED = 10
MAX_MINUTES = 24 * 60
MAX_POINTS = 500
#: how much of the log (current file and rotations, newest first) one answer may read
MAX_SCAN_BYTES = 64 * 1024 * 1024

STATUS_TIMEOUT_S = 5.0
#: a proposal waits for the service's tick in progress, then reads its sources once
PROPOSE_TIMEOUT_S = 30.0
#: a scale waits for the executor, as ``docktor scale`` does
APPLY_TIMEOUT_S = 300.0

SERVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
METRIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]*$"
DECISION_ID_PATTERN = r"^[0-9a-f]{1,32}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ToolFailure(Exception):
    """What a tool could not do, in one line for the caller (the server makes it an MCP tool error)."""


# --------------------------------------------------------------------------- bounding


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """One line (control characters become spaces), at most ``limit`` characters."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(value: Any, depth: int = 0) -> Any:
    """``value`` with every string clipped, every list and mapping cut to a few dozen items."""
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, dict):
        limit = MAX_OBSERVATIONS if depth <= 1 else MAX_LIST_ITEMS
        items = list(value.items())
        out = {clip(str(k), 100): bounded(v, depth + 1) for k, v in items[:limit]}
        if len(items) > limit:
            out["…"] = f"{len(items) - limit} more left out"
        return out
    if isinstance(value, list | tuple):
        out_list = [bounded(v, depth + 1) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            out_list.append(f"… {len(value) - MAX_LIST_ITEMS} more left out")
        return out_list
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def fit(answer: dict[str, Any], key: str) -> dict[str, Any]:
    """``answer`` under :data:`MAX_ANSWER_CHARS` as JSON: the oldest items of ``answer[key]`` go
    first, and the answer says how many went."""
    items = answer.get(key)
    if not isinstance(items, list) or len(dumps(answer)) <= MAX_ANSWER_CHARS:
        return answer
    dropped = 0
    while items and len(dumps(answer)) > MAX_ANSWER_CHARS:
        items.pop(0)
        dropped += 1
        answer["left_out"] = f"the {dropped} oldest {key} left out to keep this answer under {MAX_ANSWER_CHARS} characters"
    return answer


_RECORD_KEYS = (
    "id", "ts", "service", "mode", "decision", "current_replicas", "target_replicas", "wanted", "proposal", "source",
    "policy", "reason", "matched_rules", "missing", "guardrails", "envelope", "executed", "outcome", "errors",
    "paused", "llm", "fallbacks", "observations",
)


def clean(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` bounded, then redacted."""
    return dict(redact_obj(bounded(value)))


def compact(rec: dict[str, Any]) -> dict[str, Any]:
    """A decision as the log has it, without empty fields, bounded and redacted."""
    return clean({k: rec[k] for k in _RECORD_KEYS if rec.get(k) not in (None, [], {})})


def one_line_reason(text: str) -> str:
    """The caller's reason as it is recorded: one line, words separated by single spaces."""
    reason = " ".join(_CONTROL.sub(" ", text).split())
    if not reason:
        raise ToolFailure("reason: say why, in one line (it is recorded with the decision)")
    return clip(reason)


def downsample(points: list[Any], n: int) -> list[Any]:
    """``n`` of ``points``, evenly spaced, the first and the newest kept."""
    if len(points) <= n:
        return points
    if n == 1:
        return points[-1:]
    return [points[round(i * (len(points) - 1) / (n - 1))] for i in range(n)]


def _age(ts: Any, now: float) -> float | None:
    try:
        return round(max(0.0, now - parse_rfc3339(str(ts))), 1)
    except ValueError:
        return None


# --------------------------------------------------------------------------- the daemon


class DaemonView:
    """One config's daemon, as the MCP tools see it: ``allow_apply`` is this server's setting."""

    def __init__(self, config_path: Path, config: DocktorConfig, paths: Paths, *, allow_apply: bool,
                 locate: Callable[[], Paths] | None = None):
        self.config_path = config_path
        self.config = config
        self.paths = paths
        self.allow_apply = allow_apply
        self._locate = locate  # where the state is now (a daemon started later may have moved it)

    # ---------------------------------------------------------------- reaching it

    def _pid(self) -> int | None:
        try:
            pid = running_pid(self.paths)
            if pid is None and self._locate is not None:
                self.paths = self._locate()
                pid = running_pid(self.paths)
        except OSError as e:  # e.g. a state_dir of another user
            raise ToolFailure(f"cannot tell whether a daemon runs: {self.paths.lock}: {e.strerror or e}") from None
        return pid

    def not_running(self) -> str:
        return (f"no docktor daemon is running for {self.config_path} (state in {self.paths.state_dir}); "
                f"start it with: docktor daemon start --config {self.config_path}")

    async def _call(self, ask: Callable[[AsyncControlClient], Awaitable[Any]], timeout: float, what: str) -> Any:
        pid = self._pid()
        if pid is None:
            raise ToolFailure(self.not_running())
        try:
            return await ask(AsyncControlClient(self.paths.socket, timeout=timeout))
        except ControlUnavailable as e:
            raise ToolFailure(f"the docktor daemon (pid {pid}) did not answer {what}: {clip(str(e))}") from None
        except ControlError as e:
            raise ToolFailure(clip("; ".join(e.problems) or e.message, 1000)) from None

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(lambda c: c.status(), STATUS_TIMEOUT_S, "a status request")
        return result

    async def _names(self) -> tuple[list[str], str | None]:
        """The services: the running daemon's (it may have reloaded a newer config) or, when it
        does not answer, the config's; and a note saying the daemon's state when not running."""
        try:
            st = await self.status()
        except ToolFailure as e:
            return [s.name for s in self.config.services], f"{e}; answering from the decision log"
        return list(st.get("services") or {}), None

    @staticmethod
    def _check(service: str, names: list[str]) -> None:
        if service not in names:
            hint = difflib.get_close_matches(service, names, n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ToolFailure(f"no service named {clip(service, 100)!r}{more} (services: {clip(', '.join(names) or 'none', 500)})")

    async def _scan(self, **kwargs: Any) -> Scan:
        try:
            return await asyncio.to_thread(scan_log, self.paths.decisions, **{"budget": MAX_SCAN_BYTES, **kwargs})
        except OSError as e:
            raise ToolFailure(f"cannot read the decision log {self.paths.decisions}: {e.strerror or e}") from None

    # ---------------------------------------------------------------- read-only tools

    async def services(self) -> dict[str, Any]:
        st = await self.status()
        services = st.get("services") or {}
        listed = []
        for name, s in list(services.items())[:MAX_SERVICES]:
            item: dict[str, Any] = {
                "name": name,
                "policy": s.get("policy"),
                "bounds": s.get("bounds"),
                "replicas": s.get("replicas"),
                "paused": s.get("paused"),
                "cooldowns_left_s": s.get("clocks") or {},
                "last_decision": s.get("last_decision"),
            }
            if s.get("replicas") is None:
                item["replicas_note"] = "the executor could not say at the last tick (or no tick yet)"
            if s.get("state_file_error"):
                item["state_file_error"] = s["state_file_error"]
            listed.append(clean(item))
        answer: dict[str, Any] = {
            "daemon": clean({k: st.get(k) for k in ("pid", "mode", "phase", "started_at", "config", "state_dir")}),
            "decision_log": clean(st.get("decision_log") or {}),
            "apply_scale": "offered" if self.allow_apply else "off (mcp.allow_apply: false in the config)",
            "services": listed,
        }
        if len(services) > MAX_SERVICES:
            answer["left_out"] = f"{len(services) - MAX_SERVICES} more services left out"
        return fit(answer, "services")

    async def metrics(self, service: str) -> dict[str, Any]:
        st = await self.status()
        self._check(service, list(st.get("services") or {}))
        scan = await self._scan(service=service, limit=1)
        if not scan.records:
            raise ToolFailure(f"{service}: no decision logged yet: the daemon observes once per tick (ask again shortly)")
        rec = scan.records[-1]
        observations = dict(sorted((rec.get("observations") or {}).items()))
        return clean({
            "service": service,
            "as_of": rec.get("ts"),
            "age_s": _age(rec.get("ts"), time.time()),
            "observations": observations,
            "missing": rec.get("missing") or [],
            "errors": rec.get("errors") or [],
            "replicas": (st["services"][service] or {}).get("replicas"),
            "decision_id": rec.get("id"),
            "note": "what the daemon observed at its last tick (sources are read once per tick, never on demand)",
        })

    async def history(self, service: str, metric: str, minutes: float, max_points: int) -> dict[str, Any]:
        names, note = await self._names()
        self._check(service, names)
        scan = await self._scan(service=service, since=time.time() - minutes * 60)
        points = [[r.get("ts"), (r.get("observations") or {})[metric]] for r in scan.records
                  if isinstance((r.get("observations") or {}).get(metric), int | float)]
        if not points:
            if not scan.records:
                raise ToolFailure(f"{service}: no decision logged in the last {minutes:g} min")
            seen = sorted({k for r in scan.records for k in (r.get("observations") or {})})
            hint = difflib.get_close_matches(metric, seen, n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ToolFailure(clip(f"{service}: {metric!r} was not observed in the last {minutes:g} min{more} "
                                   f"(observed: {', '.join(seen) or 'nothing'})", 1000))
        values = [float(v) for _, v in points]
        picked = downsample(points, max_points)
        answer: dict[str, Any] = {
            "service": service, "metric": metric, "minutes": minutes,
            "count": len(points), "returned": len(picked), "first": points[0][0], "last": points[-1][0],
            "stats": {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 4), "last": values[-1]},
            "points": picked,
        }
        if len(picked) < len(points):
            answer["downsampled"] = f"{len(picked)} of {len(points)} points, evenly spaced, the first and the newest kept"
        if not scan.complete:
            answer["log_scan"] = (f"only the newest {MAX_SCAN_BYTES // 2**20} MiB of the decision log were read: "
                                  "the points start later than asked")
        if note:
            answer["daemon"] = note
        return bounded_points(fit(answer, "points"))

    async def decisions(self, service: str | None, limit: int, changes_only: bool) -> dict[str, Any]:
        names, note = await self._names()
        if service is not None:
            self._check(service, names)
        want = (lambda r: r.get("decision") != "hold") if changes_only else None
        scan = await self._scan(service=service, limit=limit, want=want)
        answer: dict[str, Any] = {"count": len(scan.records), "decisions": [compact(r) for r in scan.records]}
        if not scan.records:
            answer["note"] = "no decision logged yet" + (f" for {service}" if service else "") + (" that changed the replica count" if changes_only else "")
        if not scan.complete:
            answer["log_scan"] = f"only the newest {MAX_SCAN_BYTES // 2**20} MiB of the decision log were read"
        if note:
            answer["daemon"] = note
        return fit(answer, "decisions")

    async def explain(self, service: str | None, decision_id: str | None, count: int) -> dict[str, Any]:
        from docktor.agent.runtime.prose import explain_one  # the prose of ``docktor explain``, word for word

        names, note = await self._names()
        if service is not None:
            self._check(service, names)
        if decision_id is not None:
            scan = await self._scan(service=service, limit=1, needle=json.dumps(decision_id).encode(),
                                    want=lambda r: r.get("id") == decision_id)
            if not scan.records:
                where = "the decision log" if scan.complete else f"the newest {MAX_SCAN_BYTES // 2**20} MiB of the decision log"
                raise ToolFailure(f"no decision with id {decision_id!r} in {where}" + (f" for {service}" if service else ""))
        else:
            scan = await self._scan(service=service, limit=count)
            if not scan.records:
                raise ToolFailure("no decision logged yet" + (f" for {service}" if service else ""))
        texts = ["\n".join(clip(line, 1000) for line in explain_one(redact_obj(r))) for r in scan.records]
        while len(texts) > 1 and sum(len(t) for t in texts) > MAX_ANSWER_CHARS:
            texts.pop(0)
        answer: dict[str, Any] = {"text": "\n\n".join(texts)[:MAX_ANSWER_CHARS],
                                  "decision_ids": [r.get("id") for r in scan.records[-len(texts):]]}
        if note:
            answer["daemon"] = note
        return answer

    # ---------------------------------------------------------------- proposals and actions

    async def propose(self, service: str, n: int, reason: str) -> dict[str, Any]:
        """What the daemon would execute for ``n`` now, and why: its guardrails' verdict, not acted on."""
        from docktor.agent.runtime.prose import explain_one

        why = one_line_reason(reason)
        st = await self.status()
        result = await self._call(
            lambda c: c.scale(service, n, reason=why, source="mcp", dry_run=True, timeout=PROPOSE_TIMEOUT_S),
            PROPOSE_TIMEOUT_S, "the proposal (a tick in progress may be scaling; ask again)",
        )
        rec: dict[str, Any] = result["record"]
        answer = self._verdict(rec, n)
        answer["would_execute"] = rec.get("target_replicas")
        answer["apply_scale"] = self._would_apply(rec, st)
        out = clean(answer)
        # prose keeps its lines (clean() would make it one); each line is bounded, and so are their number
        out["explanation"] = "\n".join(clip(line, 1000) for line in explain_one(redact_obj(rec))[:MAX_LIST_ITEMS])
        return out

    def _would_apply(self, rec: dict[str, Any], st: dict[str, Any]) -> str:
        service, cur, target = rec.get("service"), rec.get("current_replicas"), rec.get("target_replicas")
        if not self.allow_apply:
            return "off in this server (mcp.allow_apply: false): only a person can act on this (docktor scale)"
        if rec.get("paused"):
            return f"refused while {service} is paused (docktor resume {service})"
        if st.get("mode") != "autonomous":
            return f"refused: the daemon runs in {st.get('mode')} mode and never acts"
        if cur == target:
            return f"would change nothing: the guardrails hold {service} at {target} now"
        return (f"would scale {service} {cur} -> {target} now (the guardrails are checked again when it is asked); "
                "the daemon's next decisions may move it again, with cooldowns counting from it")

    @staticmethod
    def _verdict(rec: dict[str, Any], n: int) -> dict[str, Any]:
        guardrails = [{"guardrail": g.get("name"), "from": g.get("from"), "to": g.get("to"),
                       **({"left_s": g["left_s"]} if g.get("left_s") is not None else {})}
                      for g in rec.get("guardrails") or []]
        out: dict[str, Any] = {
            "service": rec.get("service"), "asked": n, "current_replicas": rec.get("current_replicas"),
            "decision": rec.get("decision"), "clamped_by": guardrails, "envelope": rec.get("envelope"),
            "reason": rec.get("reason"),
        }
        for key in ("missing", "errors", "paused"):
            if rec.get(key):
                out[key] = rec[key]
        return out

    async def apply(self, service: str, n: int, reason: str) -> dict[str, Any]:
        """Ask the daemon for ``n``: clamped into the envelope, executed, recorded with source mcp."""
        why = one_line_reason(reason)
        result = await self._call(
            lambda c: c.scale(service, n, reason=why, source="mcp", dry_run=False, timeout=APPLY_TIMEOUT_S),
            APPLY_TIMEOUT_S, "the scale request (it may still be acting: get_recent_decisions shows the outcome once logged)",
        )
        rec: dict[str, Any] = result["record"]
        cur, target, outcome = rec.get("current_replicas"), rec.get("target_replicas"), rec.get("outcome") or {}
        if rec.get("executed") and outcome.get("status") == "error":
            raise ToolFailure(clip(f"{service}: scale {cur} -> {target} failed: {outcome.get('message')} "
                                   f"(decision {rec.get('id')}, logged with source mcp)", 1000))
        if cur != target and not rec.get("executed"):
            raise ToolFailure(clip(f"{service}: not scaled: {rec.get('reason')} (decision {rec.get('id')})", 1000))
        answer = self._verdict(rec, n)
        answer.update({
            "from": cur, "to": target, "executed": bool(rec.get("executed")), "outcome": rec.get("outcome"),
            "decision_id": rec.get("id"),
            "recorded": f"in {self.paths.decisions} with source mcp and your reason",
        })
        if not rec.get("executed"):
            answer["note"] = f"nothing executed: the guardrails hold {service} at {target} now"
        return clean(answer)


def bounded_points(answer: dict[str, Any]) -> dict[str, Any]:
    """Points are pairs of a timestamp and a number: already small; the rest is bounded."""
    points = answer.pop("points")
    out = clean(answer)
    out["points"] = points
    return out
