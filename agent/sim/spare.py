"""The spare capacity that would have won a grid cell ``docktor`` lost, and its price.

Where ``docktor``'s attainment is below a peer's in a ``bench --grid`` cell, the question a
user has is what insurance would have closed the gap: ``headroom: N`` replicas held above the
policy's count (docs/policy.md), tried N = 1, 2, ... until the attainment reaches the best
peer's, and priced as the replica-seconds it takes against ``docktor``'s own in that cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from docktor.agent.config.headroom_setting import Headroom
from docktor.agent.sim.simulator import Scenario
from docktor.agent.sim.trace_file import Trace

#: the most spare replicas tried per cell
MAX_SPARE = 10


@dataclass(frozen=True)
class Spare:
    """What won (or did not win) one lost cell."""

    trace: str
    scenario: Scenario
    docktor: float  # docktor's attainment in the cell
    peer: str
    peer_attainment: float
    #: the fewest spare replicas that reach the peer's attainment; None: not within MAX_SPARE
    replicas: int | None
    attainment: float  # docktor's attainment with them (or with MAX_SPARE)
    cost: float  # their replica-seconds over docktor's own in the cell


def lost_cells(rows: Sequence[dict[str, Any]], versus: Sequence[str]) -> list[tuple[dict[str, Any], str, float]]:
    """(docktor's row, the best peer, its attainment) for each cell where a peer in ``versus`` did better."""
    by_cell: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in rows:
        key = (r["trace"], r["startup_s"], r["slo_s"], r["cv"], r["interval_s"], r.get("peer_period_s"))
        by_cell.setdefault(key, {})[r["policy"]] = r
    out = []
    for cell in by_cell.values():
        mine = cell.get("docktor")
        peers = [(cell[p]["slo_attainment"], p) for p in versus if p in cell and p != "docktor"]
        if mine is None or not peers:
            continue
        best, peer = max(peers)
        if best > mine["slo_attainment"]:
            out.append((mine, peer, best))
    return out


def spare_to_win(trace: Trace, scenario: Scenario, row: dict[str, Any], peer: str, goal: float) -> Spare:
    """Try ``headroom`` 1, 2, ... replicas on ``trace`` until docktor reaches ``goal`` (the peer's attainment)."""
    from docktor.agent.sim.baselines import run_policy
    from docktor.agent.sim.simulator import workload

    load = workload(trace, scenario)
    att, cost = row["slo_attainment"], 1.0
    for extra in range(1, MAX_SPARE + 1):
        run = run_policy("docktor", trace, replace(scenario, headroom=Headroom(replicas=extra)), load)
        summary = run.summary()
        att = float(summary["slo_attainment"])  # type: ignore[arg-type]
        cost = run.replica_seconds / row["replica_seconds"] if row["replica_seconds"] else float("inf")
        if att >= goal:
            return Spare(trace.name, scenario, row["slo_attainment"], peer, goal, extra, att, cost)
    return Spare(trace.name, scenario, row["slo_attainment"], peer, goal, None, att, cost)


def lines(spares: Sequence[Spare], describe: Any) -> list[str]:
    """The report's lines, one per lost cell."""
    out = []
    for s in spares:
        where = f"{s.trace} ({describe(s.scenario)}): docktor {100 * s.docktor:.2f}% < {s.peer} {100 * s.peer_attainment:.2f}%"
        if s.replicas is None:
            out.append(f"  {where}: not won with up to {MAX_SPARE} spare replicas ({100 * s.attainment:.2f}%, {s.cost:.2f}x)")
        else:
            out.append(f"  {where}: won with {s.replicas} spare replica{'s' if s.replicas != 1 else ''} "
                       f"(headroom: {s.replicas}; {100 * s.attainment:.2f}%) at {s.cost:.2f}x docktor's replica-seconds")
    return out
