"""``daemon logs``' table for the terminal's width: columns dropped in the stated order
(:data:`~docktor.agent.cli.render.DROP_ORDER`) so the reason keeps a readable line, wrapped, never cut."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from docktor.agent.cli.render import DROP_ORDER, REASON_MIN, print_table

REASON = ("queue.backlog 1200 / 100 per replica = 12; limited to 4 by the step limit (asked 12); "
          "https://broker.example:15672/api/queues/%2F/a-queue-with-a-long-name")
RECORD = {"ts": "2026-12-07T12:00:00.123Z", "service": "worker", "decision": "scale_up", "current_replicas": 0,
          "target_replicas": 4, "wanted": 12, "source": "policy", "mode": "dry-run", "executed": False,
          "reason": REASON, "errors": []}


def _table(width: int) -> tuple[list[str], list[str]]:
    console = Console(file=io.StringIO(), width=width)
    print_table([RECORD], console=console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    lines = text.splitlines()
    header = [c.strip() for c in lines[1].strip("┃").split("┃")]
    return header, lines


@pytest.mark.parametrize(("width", "dropped"), [(200, ()), (80, DROP_ORDER[:2]), (60, DROP_ORDER)])
def test_a_narrow_terminal_drops_columns_in_order_and_wraps_the_whole_reason(width: int, dropped: tuple[str, ...]) -> None:
    header, lines = _table(width)
    assert header == [c for c in ("time", "service", "decision", "replicas", "source", "outcome") if c not in dropped] + ["reason"]
    assert max(len(line) for line in lines) <= width
    cells = [line.strip("│").split("│")[-1].strip() for line in lines[3:] if line.startswith("│")]
    if width == 80:  # what is left once source and decision are gone: a line, not a sliver
        assert max(map(len, cells)) >= REASON_MIN - 4  # wrapping between words leaves a line a little short
    assert "…" not in "".join(lines)
    assert "".join(cells).replace(" ", "") == ("wants 12: " + REASON).replace(" ", "")  # every character, in order
