"""Docktor's own benchmark programs (not installed): ``make bench`` runs them; docs/benchmarks.md has their figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docktor.agent.sim.trace_file import Trace


def public_and_held_out(seeds: str) -> list[Trace]:
    """The public traces, then the held-out traces of each comma-separated seed (``--held-out 7,8``)."""
    from docktor.agent.sim.catalog import DEFAULT_TRACES
    from docktor.agent.sim.trace_file import load_traces
    from docktor.agent.sim.trace_gen import held_out_traces

    traces = load_traces(DEFAULT_TRACES)
    for seed in (int(s) for s in seeds.split(",") if s.strip()):
        traces += held_out_traces(seed)
    return traces
