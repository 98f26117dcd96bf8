"""The simulator checks when the daemon's loop does (agent/core/schedule.py): Docktor's own
controllers get the warm-up read WARM_UP_S after the first; the HPA and KEDA models do not."""

from __future__ import annotations

import numpy as np

from docktor.agent.sim.baselines import ProductionController, docktor_service, make_controller
from docktor.agent.sim.simulator import Scenario, simulate, workload
from docktor.agent.sim.trace_file import Trace


class Seeing(ProductionController):
    """The production decision, keeping what each check was shown."""

    seen: list[tuple[float, dict[str, float]]]

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        self.seen.append((now, dict(obs)))
        return super().tick(obs, current, now)


def check_times(name: str, scenario: Scenario, trace: Trace) -> list[float]:
    run = simulate(trace, scenario, make_controller(name, scenario), load=workload(trace, scenario),  # type: ignore[arg-type]
                   record_decisions=True)
    return [float(d["t"]) for d in run.decisions]  # type: ignore[arg-type]


TRACE = Trace("flat", np.full(180, 600, dtype=np.int64))  # 12 replicas' work at 20 ms each, from the start


def test_docktor_at_30_s_checks_sees_a_rate_at_5_s() -> None:
    scenario = Scenario(interval_s=30)
    ctl = Seeing("docktor", docktor_service(scenario))
    ctl.seen = []
    run = simulate(TRACE, scenario, ctl, load=workload(TRACE, scenario), record_decisions=True)
    assert [d["t"] for d in run.decisions][:5] == [0.0, 5.0, 30.0, 60.0, 90.0]
    (t0, first), (t1, second) = ctl.seen[:2]
    assert (t0, t1) == (0.0, 5.0)
    assert "queue.rate_in" not in first  # a rate needs two reads
    assert 550.0 < second["queue.rate_in"] < 650.0
    # and it already acts on the backlog: replicas start 25 s before the first grid slot
    assert run.decisions[1]["target"] > scenario.min_replicas  # type: ignore[operator]


def test_the_peers_and_the_go_rules_keep_their_own_schedule() -> None:
    slow = Scenario(interval_s=30, peer_period_s=30)
    for name in ("hpa", "keda", "rules"):
        assert check_times(name, slow, TRACE)[:3] == [0.0, 30.0, 60.0], name


def test_at_5_s_checks_the_warm_up_changes_nothing() -> None:
    assert check_times("docktor", Scenario(interval_s=5), TRACE)[:4] == [0.0, 5.0, 10.0, 15.0]
