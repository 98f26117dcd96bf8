"""The grid's spare-capacity report (agent/sim/spare.py): which cells a peer won, and the headroom that wins them back."""

from __future__ import annotations

import numpy as np

from docktor.agent.sim.baselines import run_policy
from docktor.agent.sim.grid import describe
from docktor.agent.sim.simulator import Scenario, workload
from docktor.agent.sim.spare import lines, lost_cells, spare_to_win
from docktor.agent.sim.trace_file import Trace


def row(policy: str, att: float, trace: str = "t", startup: float = 10.0) -> dict[str, object]:
    return {"trace": trace, "policy": policy, "slo_attainment": att, "replica_seconds": 100.0,
            "startup_s": startup, "slo_s": 30.0, "cv": 0.5, "interval_s": 5.0, "peer_period_s": None}


def test_a_cell_is_lost_to_the_best_peer_that_did_better() -> None:
    rows = [row("docktor", 0.95), row("keda", 0.97), row("hpa-tuned", 0.99),
            row("docktor", 1.0, startup=60.0), row("keda", 0.9, startup=60.0)]
    lost = lost_cells(rows, ["hpa-tuned", "keda"])
    assert [(r["startup_s"], peer, goal) for r, peer, goal in lost] == [(10.0, "hpa-tuned", 0.99)]


def test_spare_replicas_win_a_surge_no_count_chosen_after_it_could_meet() -> None:
    # a tenfold surge after a quiet start, a 60 s start-up against a 30 s SLO: only replicas held
    # before it help. Every extra replica is tried in turn until the attainment reaches the goal.
    scenario = Scenario(startup_s=60.0)
    trace = Trace("surge", np.array([50] * 300 + [500] * 60 + [50] * 120))
    load = workload(trace, scenario)
    plain = run_policy("docktor", trace, scenario, load).summary()
    assert float(plain["slo_attainment"]) < 1.0  # type: ignore[arg-type]
    spare = spare_to_win(trace, scenario, plain, "a peer", 1.0)
    assert spare.replicas is not None and spare.attainment >= 1.0
    assert spare.cost > 1.0  # insurance is paid for
    (line,) = lines([spare], describe)
    assert f"won with {spare.replicas} spare replica" in line and f"headroom: {spare.replicas}" in line
