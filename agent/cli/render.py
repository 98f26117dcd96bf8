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
        if rec.get("paused") and rec.get("decision") != "hold":
            return "paused"
        return "advisory" if rec.get("mode") in ("advisory", "dry-run") and rec.get("decision") != "hold" else "-"
    o = rec.get("outcome") or {}
    return f"{o.get('status', '?')} {o.get('duration_ms', 0):.0f}ms"


def reason_text(rec: dict[str, Any]) -> str:
    """The decision's reason, then what went wrong observing it (a missing stream, an engine down):
    the cause of a hold belongs where people look, not only in ``--json``."""
    reason = str(rec.get("reason", ""))
    wanted = rec.get("wanted")
    if wanted is not None and rec.get("target_replicas") is not None and wanted != rec.get("target_replicas"):
        # what the proposer wants first, apart from this tick's count (the replicas column)
        reason = f"wants {wanted}: {reason}"
    errors = [str(e) for e in rec.get("errors") or []]
    return reason + "".join(f" | {e}" for e in errors)


#: (header, width) of the fixed columns; the reason takes the rest of the line
COLUMNS = (("time", 12), ("service", 12), ("decision", 10), ("replicas", 8), ("source", 8), ("outcome", 12))


def _cells(rec: dict[str, Any]) -> list[str]:
    return [str(rec.get("ts", ""))[11:23], str(rec.get("service", "")), str(rec.get("decision", "")), arrow(rec),
            str(rec.get("source", "")), outcome_text(rec)]


def _style(rec: dict[str, Any]) -> str:
    if outcome_text(rec).startswith("error"):
        return "red"
    return {"scale_up": "green", "scale_down": "yellow"}.get(str(rec.get("decision", "")), "")


def stream_header() -> None:
    """The header of :func:`stream_row`'s table (``daemon logs -f``: rows arrive one at a time)."""
    out.print("  ".join(h.upper().ljust(w) for h, w in COLUMNS) + "  REASON", markup=False, highlight=False)


def stream_row(rec: dict[str, Any]) -> None:
    """One row in the same columns as :func:`print_table`, printed as soon as it arrives."""
    rec = redact_obj(rec)
    cells = "  ".join(c.ljust(w) for c, (_, w) in zip(_cells(rec), COLUMNS, strict=True))
    out.print(f"{cells}  {reason_text(rec)}", style=_style(rec) or None, markup=False, highlight=False)


def print_table(records: Iterable[dict[str, Any]]) -> None:
    table = Table(show_lines=False)
    for name, _ in COLUMNS:
        table.add_column(name, no_wrap=True)
    table.add_column("reason", ratio=1)
    n = 0
    for rec in map(redact_obj, records):
        n += 1
        table.add_row(*_cells(rec), reason_text(rec), style=_style(rec))
    if n == 0:
        out.print("no decisions yet", markup=False)
    else:
        out.print(table)
