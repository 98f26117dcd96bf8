"""How decisions look on a terminal: one table for ``decide``, ``daemon logs``; one line for ``-f``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from docktor.agent.redact import redact, redact_obj

# Not a terminal (a pipe, a file, CI): wide enough that reasons stay on one line. (Not COLUMNS:
# GNU readline exports its own guess to every child of a program that loaded it, pytest included.)
out = Console() if Console().is_terminal else Console(width=200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """Print plain text (no markup, no highlighting): config values may contain brackets."""
    out.print(redact(text), markup=False, highlight=False)


def warn(text: str) -> None:
    err.print(f"warning: {redact(text)}", markup=False)


def arrow(rec: dict[str, Any]) -> str:
    """``2->4``; ``unknown`` for a decision made without a replica count (the reason says why)."""
    current, target = rec.get("current_replicas"), rec.get("target_replicas")
    if current is None or target is None:
        return "unknown"
    return f"{current}->{target}"


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
    from docktor.agent.runtime.prose import unknown_replicas

    reason = str(rec.get("reason", ""))
    errors = [str(e) for e in rec.get("errors") or []]
    unknown = unknown_replicas(rec) if rec.get("decision") else None
    wanted = rec.get("wanted")
    if unknown:
        # no replica count: say so and why, once (the executor's error is the why)
        reason = f"{unknown[0]}: holding"
        errors = [e for e in errors if e != unknown[1]]
    elif wanted is not None and rec.get("target_replicas") is not None and wanted != rec.get("target_replicas"):
        # what the proposer wants first, apart from this tick's count (the replicas column)
        reason = f"wants {wanted}: {reason}"
    return reason + "".join(f" | {e}" for e in errors)


def slo_cell(slo: dict[str, Any] | None) -> str:
    """``daemon status``'s wait-SLO column: ``99.8 % / 97.1 %`` (5 and 60 minutes), ``-`` for a
    window that cannot be told, ``unknown (why)`` when neither can, ``-`` without a wait target."""
    if not slo:
        return "-"
    values = [slo.get("attainment_5m"), slo.get("attainment_60m")]
    if all(v is None for v in values):
        return f"unknown ({slo.get('why') or 'no samples yet'})"
    return " / ".join("-" if v is None else f"{100 * float(v):.1f} %" for v in values)


#: (header, width) of the fixed columns; the reason takes the rest of the line
COLUMNS = (("time", 12), ("service", 12), ("decision", 10), ("replicas", 8), ("source", 8), ("outcome", 12))
#: On a narrow terminal the reason keeps at least this many characters a line: columns are
#: dropped, in :data:`DROP_ORDER`, until it does; then it wraps between words, never cut.
REASON_MIN = 30
#: the columns a narrow terminal drops first: who proposed (``--json`` has it), the direction
#: (the replicas column shows it), then the time (``--json`` and ``explain`` have it)
DROP_ORDER = ("source", "decision", "time")


def _cells(rec: dict[str, Any]) -> dict[str, str]:
    return {"time": str(rec.get("ts", ""))[11:23], "service": str(rec.get("service", "")),
            "decision": str(rec.get("decision", "")), "replicas": arrow(rec), "source": str(rec.get("source", "")),
            "outcome": outcome_text(rec)}


def kept_columns(width: int, widths: dict[str, int], per_column: int, reason_min: int = REASON_MIN) -> list[str]:
    """The fixed columns that leave the reason ``reason_min`` characters on a line ``width``
    wide, each fixed column taking its width plus ``per_column`` (padding, separators)."""
    kept = [name for name, _ in COLUMNS]
    for name in DROP_ORDER:
        if width - sum(widths[n] + per_column for n in kept) - per_column >= reason_min:
            break
        kept.remove(name)
    return kept


def _style(rec: dict[str, Any]) -> str:
    if outcome_text(rec).startswith("error"):
        return "red"
    return {"scale_up": "green", "scale_down": "yellow"}.get(str(rec.get("decision", "")), "")


def _stream_columns() -> list[tuple[str, int]]:
    # a streamed row's reason runs on over whole lines when it wraps, so less of it must fit beside the columns
    widths = dict(COLUMNS)
    return [(name, widths[name]) for name in kept_columns(out.width, widths, 2, REASON_MIN // 2)]


def stream_header() -> None:
    """The header of :func:`stream_row`'s table (``daemon logs -f``: rows arrive one at a time)."""
    out.print("  ".join(h.upper().ljust(w) for h, w in _stream_columns()) + "  REASON", markup=False, highlight=False)


def stream_row(rec: dict[str, Any]) -> None:
    """One row in the same columns as :func:`print_table`, printed as soon as it arrives."""
    rec = redact_obj(rec)
    cells = _cells(rec)
    line = "  ".join(cells[name].ljust(w) for name, w in _stream_columns())
    out.print(f"{line}  {reason_text(rec)}", style=_style(rec) or None, markup=False, highlight=False)


def print_table(records: Iterable[dict[str, Any]], console: Console | None = None) -> None:
    """The decisions as a table as wide as ``console`` (the terminal): on a narrow one the fixed
    columns of :data:`DROP_ORDER` go first, so the reason keeps :data:`REASON_MIN` characters a line."""
    console = console or out
    rows = [(_cells(rec), reason_text(rec), _style(rec)) for rec in map(redact_obj, records)]
    if not rows:
        console.print("no decisions yet", markup=False)
        return
    widths = {name: max(len(name), *(len(cells[name]) for cells, _, _ in rows)) for name, _ in COLUMNS}
    kept = kept_columns(console.width, widths, 3)  # a cell's padding and its border: 3 characters
    table = Table(show_lines=False)
    for name in kept:
        table.add_column(name, no_wrap=True)
    table.add_column("reason", ratio=1, overflow="fold")  # wraps between words; a long word folds, never "…"
    for cells, reason, style in rows:
        table.add_row(*(cells[name] for name in kept), reason, style=style)
    console.print(table)
