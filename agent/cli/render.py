"""How decisions look on a terminal: one table for ``decide``, ``daemon logs``; one line for ``-f``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from docktor.agent.redact import redact, redact_obj

# Not a terminal (a pipe, a file, CI): wide enough that reasons stay on one line.
out = Console() if Console().is_terminal else Console(width=200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """Print plain text (no markup, no highlighting): config values may contain brackets."""
    out.print(redact(text), markup=False, highlight=False)


def warn(text: str) -> None:
    err.print(f"warning: {redact(text)}", markup=False)


def arrow(rec: dict[str, Any]) -> str:
    return f"{rec.get('current_replicas', '?')}->{rec.get('target_replicas', '?')}"


def outcome_text(rec: dict[str, Any]) -> str:
    if not rec.get("executed"):
        return "advisory" if rec.get("mode") in ("advisory", "dry-run") and rec.get("decision") != "hold" else "-"
    o = rec.get("outcome") or {}
    return f"{o.get('status', '?')} {o.get('duration_ms', 0):.0f}ms"


def one_line(rec: dict[str, Any]) -> str:
    return (f"{rec.get('ts', '')}  {rec.get('service', ''):<12} {rec.get('decision', ''):<10} {arrow(rec):<7} "
            f"{rec.get('source', ''):<8} {outcome_text(rec):<12} {rec.get('reason', '')}")


def print_table(records: Iterable[dict[str, Any]]) -> None:
    table = Table(show_lines=False)
    for name in ("time", "service", "decision", "replicas", "source", "outcome"):
        table.add_column(name, no_wrap=True)
    table.add_column("reason", ratio=1)
    n = 0
    for rec in map(redact_obj, records):
        n += 1
        style = {"scale_up": "green", "scale_down": "yellow"}.get(rec.get("decision", ""), "")
        outcome = outcome_text(rec)
        if outcome.startswith("error"):
            style = "red"
        table.add_row(str(rec.get("ts", ""))[11:23], rec.get("service", ""), rec.get("decision", ""), arrow(rec),
                      rec.get("source", ""), outcome, rec.get("reason", ""), style=style)
    if n == 0:
        out.print("no decisions yet", markup=False)
    else:
        out.print(table)


