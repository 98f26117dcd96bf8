"""A decision record in prose: what was observed, which rules matched, what the policy (or the
LLM) proposed, which guardrail changed it and for how long, what was executed and whether it
worked. ``docktor explain`` prints it; ``docktor mcp``'s ``explain_decision`` returns it, word
for word. Standard library only at import (the guardrails' words are read when a record needs
them): the CLI imports it when the command runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from docktor.agent.core.effect import text as effect_text

#: observations shown first, in this order; the rest follow sorted
_FIRST = (
    "queue.backlog", "queue.pending", "queue.ack_pending", "queue.rate_in", "queue.rate_out",
    "replicas.running", "replicas.desired", "replicas.failed", "cpu.avg", "mem.avg_mb",
)
#: derived figures the reader can work out, left out unless a rule uses them
_DERIVED = ("queue.backlog_per_replica", "queue.rate_out_per_replica")


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.3g}"


def observed(obs: Mapping[str, float], used: Iterable[str] = ()) -> str:
    """``queue.backlog 1500, queue.rate_in 320/s, replicas.running 2, ...``: every figure once."""
    wanted = set(used)
    keys = [k for k in _FIRST if k in obs] + sorted(k for k in obs if k not in _FIRST)
    parts = []
    for key in keys:
        if key in _DERIVED and key not in wanted:
            continue
        unit = "/s" if key.endswith(("rate_in", "rate_out")) or key.endswith("_per_second") else ""
        parts.append(f"{key} {_number(float(obs[key]))}{unit}")
    return ", ".join(parts) or "nothing (no source or executor reading)"


def _outcome(rec: Mapping[str, Any]) -> str:
    if not rec.get("executed"):
        if rec.get("decision") == "hold":
            return "nothing to do"
        paused = rec.get("paused")
        if paused:
            until = f"until {paused.get('until')}" if paused.get("until") else "until resumed"
            why = f": {paused['reason']}" if paused.get("reason") else ""
            return f"not executed: the service is paused {until} (docktor pause{why})"
        return f"not executed ({rec.get('mode')} mode)" if rec.get("mode") != "autonomous" else "not executed"
    o = rec.get("outcome") or {}
    took = f" in {float(o.get('duration_ms') or 0) / 1000:.1f} s" if o.get("duration_ms") is not None else ""
    return f"{o.get('status', 'unknown')}{took}: {o.get('message', '')}".rstrip(": ")


def _llm(llm: Mapping[str, Any]) -> str | None:
    if not llm:
        return None
    if not llm.get("asked") and not llm.get("landed"):
        why = llm.get("why")
        return f"not asked: {why}" if why else None
    if llm.get("error"):
        return f"asked, failed ({llm['error']}): the deterministic decision stands"
    said = f"proposed {llm.get('proposal')}"
    if llm.get("confidence") is not None:
        said += f" (confidence {llm['confidence']})"
    reason = llm.get("reason")
    if reason:
        said += f': "{reason}"'
    if llm.get("latency_ms") is not None:
        said += f"; {float(llm['latency_ms']):.0f} ms"
    return said


def unknown_replicas(rec: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """``("replicas unknown (executor: no status within 5 s)", that error)`` for a decision made
    without a replica count (the executor could not be read), else None. The error it quotes is
    returned too, so a caller that lists the record's errors does not say it twice."""
    if rec.get("current_replicas") is not None:
        return None
    return replicas_unknown(rec.get("errors") or [])


def replicas_unknown(errors: Iterable[object]) -> tuple[str, str | None]:
    """``replicas unknown (why)``, the why from the executor's error among ``errors``, and that error."""
    said = next((str(e) for e in errors if str(e).startswith("executor")), None)
    why = said.removeprefix("executor: ") if said else "the executor could not be read"
    return f"replicas unknown ({why})", said


def tick_text(rec: Mapping[str, Any]) -> str | None:
    """What the proposer wants and, apart, what the guardrails let happen this tick:
    ``wants 12; this tick 0 -> 4, limited by the step limit``, ``wants 8; this tick 6 -> 6, held by
    cooldown_up (21 s left)``. None for a record without the three counts (an older log, or no
    replica count to decide from)."""
    wanted, current, target = rec.get("wanted"), rec.get("current_replicas"), rec.get("target_replicas")
    if wanted is None or current is None or target is None:
        return None
    this = f"wants {wanted}; this tick {current} -> {target}"
    if wanted == target:
        return this
    from docktor.agent.core.guardrails import guardrail_words  # the guardrails' own words

    verb = "held" if target == current else "limited"
    by = []
    for g in rec.get("guardrails") or []:
        left = f" ({float(g['left_s']):.0f} s left)" if g.get("left_s") is not None else ""
        by.append(f"{guardrail_words(str(g.get('name')))}{left}")
    return f"{this}, {verb} by {' and '.join(by)}" if by else this


def slo_text(slo: Mapping[str, Any] | None) -> str | None:
    """A record's ``slo``: ``99.8 % of 12,345 started within 15 s over 5m; 97.1 % of ... over
    60m``, or ``unknown (why)``; None without one (no wait target)."""
    if not slo:
        return None
    target = f"{float(slo.get('target_wait_s') or 0):g} s"
    parts = []
    for window in ("5m", "60m"):
        value = slo.get(f"attainment_{window}")
        if value is None:
            continue
        started = slo.get(f"started_{window}")
        of = f" of {int(started):,}" if isinstance(started, int | float) else ""
        parts.append(f"{100 * float(value):.1f} %{of} started within {target} over {window}")
    if not parts:
        return f"unknown ({slo.get('why') or 'no samples yet'})"
    return "; ".join(parts) + (f" ({slo['why']})" if slo.get("why") else "")


def explain_one(rec: Mapping[str, Any]) -> list[str]:
    """The lines that explain one decision record (as ``read_records`` returns it)."""
    unknown = unknown_replicas(rec)
    arrow = "(replicas unknown)" if unknown else f"{rec.get('current_replicas')} -> {rec.get('target_replicas')}"
    lines = [f"{str(rec.get('ts', ''))[:23].replace('T', ' ')}  {rec.get('service')}  {rec.get('decision')} {arrow}"]
    rules = list(rec.get("matched_rules") or [])

    def row(label: str, text: str | None) -> None:
        if text:
            lines.append(f"  {label:<10} {text}")

    row("observed", observed(rec.get("observations") or {}, used=[r.split(" ", 1)[0] for r in rules]))
    if rec.get("missing"):
        row("missing", ", ".join(rec["missing"]) + " (never read as 0: no scale-in on missing data)")
    row("rules", ("matched: " + "; ".join(rules)) if rules else "none matched")
    who = {"rules": "the rules", "policy": f"policy {rec.get('policy')}", "llm": "the LLM", "fallback": f"policy {rec.get('policy')} (LLM fallback)",
           "manual": "a manual request", "mcp": "an MCP client"}.get(str(rec.get("source")), str(rec.get("source")))
    if unknown:
        # nothing was proposed: with no replica count there is nothing to size from
        row("replicas", f"{unknown[0]}: nothing proposed, holding")
    else:
        row("proposed", f"{rec.get('proposal')} by {who}: {rec.get('reason', '')}")
        row("wants", (tick_text(rec) or "").removeprefix("wants "))
        row("llm", _llm(rec.get("llm") or {}))
        notes = []
        for g in rec.get("guardrails") or []:
            left = f", {g['left_s']:.0f} s left" if g.get("left_s") is not None else ""
            notes.append(f"{g.get('name')} turned {g.get('from')} into {g.get('to')}{left}")
        row("guardrails", "; ".join(notes) if notes else "none changed the proposal")
    row("outcome", _outcome(rec))
    for effect in rec.get("effects") or []:
        row("effect", effect_text(effect))
    row("wait SLO", slo_text(rec.get("slo")))
    for error in rec.get("errors") or []:
        if not unknown or str(error) != unknown[1]:
            row("error", str(error))
    return lines
