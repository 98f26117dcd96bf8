"""The score table of ``docktor simulate`` and ``docktor bench``: Markdown, a rich table on a
terminal, or plain aligned columns when piped."""

from __future__ import annotations

from typing import Any


def print_rows(rows: list[dict[str, Any]], markdown: bool) -> None:
    """The score table: Markdown with ``--markdown``; else a rich table on a terminal, and plain
    aligned columns (no box characters, nothing to strip) when piped into a file or a tool."""
    from docktor.agent.sim.bench import cells, table

    if markdown:
        print(table(rows))
        return
    from rich.console import Console

    console = Console()
    header, body, numeric = cells(rows)
    if not console.is_terminal:
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        for line in [header, *body]:
            print("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(line, widths, numeric)).rstrip())
        return
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    def laid_out(widths: list[int]) -> tuple[Table, int]:
        grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name, num, width in zip(header, numeric, widths, strict=True):
            grid.add_column(name, justify="right" if num else "left", width=width)
        for i, line in enumerate(body):
            last_of_trace = i + 1 == len(body) or body[i + 1][0] != line[0]  # a rule between traces
            grid.add_row(*line, style="bold" if line[1] == "docktor" else None, end_section=last_of_trace)
        return grid, Measurement.get(console, console.options.update_width(10_000), grid).maximum

    # Fixed widths, so rich never cuts a number: the headers' on one line if that fits the
    # terminal, else headers wrapped at their spaces ("max backlog" over two lines); a terminal
    # too narrow even for that gets long lines it wraps itself, never a column dropped.
    columns = list(zip(header, *body))
    grid, width = laid_out([max(len(c) for c in col) for col in columns])
    if width > console.width:
        grid, width = laid_out([max(len(w) for w in [*col[0].split(), *col[1:]]) for col in columns])
        if width > console.width:
            console = Console(width=width)  # print() caps a width at the console's own
    console.print(grid)
