"""The simulator's faults (agent/sim/simulator.py): the measured age, a 3x service-time drift, a
throughput cap; and what the docktor policy does about them (closed loop, "not helping")."""

from __future__ import annotations

import numpy as np
import pytest

from docktor.agent.core.decide import Decision, remember, step
from docktor.agent.problems import UsageError
from docktor.agent.sim.baselines import ProductionController, docktor_service, make_controller, run_policy
from docktor.agent.sim.catalog import DEFAULT_TRACES
from docktor.agent.sim.simulator import Scenario, simulate, workload
from docktor.agent.sim.trace_file import Trace, load_trace


class Told(ProductionController):
    """The production controller, keeping every decision (reason and observations included)."""

    def __init__(self, scenario: Scenario, closed_loop: bool = True) -> None:
        svc = docktor_service(scenario).model_copy(update={"closed_loop": closed_loop})
        super().__init__("docktor", svc)
        self.decisions: list[tuple[float, Decision]] = []

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        d = step(self.svc, obs, current, self.state, now)
        remember(self.state, d, now, acted=d.changes, ok=True, observations=d.observations)
        self.decisions.append((now, d))
        return d.target


class Watched:
    """A fixed count, keeping what it was shown."""

    name = "watched"
    interval = 1.0

    def __init__(self) -> None:
        self.seen: list[tuple[float, dict[str, float]]] = []

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return 1

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        self.seen.append((now, dict(obs)))
        return 1


def shipped(name: str) -> Trace:
    return load_trace(DEFAULT_TRACES / f"{name}.csv")


def test_oldest_age_is_the_wait_so_far_of_the_first_message_not_started() -> None:
    # one replica at 0.7 s a message, 2 arriving per second: a queue that grows, so ages do too
    scenario = Scenario(service_s=0.7, cv=0.0, startup_s=0, slo_s=60, interval_s=1, max_replicas=1)
    trace = Trace("t", np.array([2] * 30))
    load = workload(trace, scenario)
    watched = Watched()
    run = simulate(trace, scenario, watched, load=load)
    starts = load.arrivals + run.waits
    for now, obs in watched.seen:
        waiting = [a for a, s in zip(load.arrivals, starts) if a <= now and s >= now]
        assert obs["queue.oldest_age"] == pytest.approx(now - min(waiting) if waiting else 0.0)
    assert max(o["queue.oldest_age"] for _, o in watched.seen) > 5  # the queue did grow


def test_drift_makes_the_messages_after_the_midpoint_slower_only() -> None:
    trace = Trace("t", np.array([50] * 100))
    plain, drifted = workload(trace, Scenario()), workload(trace, Scenario(drift=3.0))
    later = plain.arrivals >= 50
    assert np.allclose(drifted.service[~later], plain.service[~later])
    assert np.allclose(drifted.service[later], 3 * plain.service[later])


@pytest.mark.parametrize(("field", "value", "flag"), [("drift", 0.0, "--drift"), ("cap_rate", -5.0, "--cap-rate")])
def test_a_fault_out_of_range_names_its_option(field: str, value: float, flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        Scenario(**{field: value}).check()  # type: ignore[arg-type]


def test_a_throughput_cap_is_one_no_replica_count_lifts() -> None:
    # 10 replicas' worth of output (500/s at 20 ms); 30 replicas from the start do no better
    scenario = Scenario(cap_rate=500.0, cv=0.0, max_replicas=30, min_replicas=30)
    trace = Trace("t", np.array([900] * 60))
    load = workload(trace, scenario)
    run = simulate(trace, scenario, make_controller("static", scenario), load=load)
    started = int(np.count_nonzero(load.arrivals + run.waits < 60))
    assert started == pytest.approx(500 * 60, rel=0.02)


# ramp: the slowdown's first check shows the age 2.3 s ahead, less than half the interval; found
# there (the age had followed the prediction within 0.2 s), not a check later, 99.72 % not 99.12 %
@pytest.mark.parametrize("name", ["diurnal", "ramp"])
def test_closed_loop_keeps_the_promise_through_a_3x_drift_where_the_open_loop_does_not(name: str) -> None:
    scenario = Scenario(drift=3.0)
    trace = shipped(name)
    load = workload(trace, scenario)
    closed, opened = Told(scenario), Told(scenario, closed_loop=False)
    closed_run = simulate(trace, scenario, closed, load=load)
    open_run = simulate(trace, scenario, opened, load=load)
    assert closed_run.summary()["slo_attainment"] >= 0.995 > open_run.summary()["slo_attainment"]
    assert any("closed loop: oldest message" in d.reason for _, d in closed.decisions)
    # a slowdown is not a limit: scale-ups kept adding throughput, none was ever held
    assert all(d.observations.get("scaling.ineffective") == 0.0 for _, d in closed.decisions
               if "scaling.ineffective" in d.observations)


def test_with_a_throughput_cap_docktor_stops_near_it_while_the_peers_climb_to_their_maximum() -> None:
    scenario = Scenario(cap_rate=500.0)  # 10 replicas at 20 ms reach it
    trace = shipped("ramp")
    load = workload(trace, scenario)
    told = Told(scenario)
    run = simulate(trace, scenario, told, load=load)
    held = [d for _, d in told.decisions if "a downstream limit? Holding at" in d.reason]
    assert held, "docktor never said scaling was not helping"
    # the first scale-up past the cap adds nothing, its output flat and its count steady: the hold
    # begins there, and the replica held past the cap would show the limit lift, so no probe
    assert held[0].current <= 10 + 1
    assert all(d.target <= d.current for d in held)
    assert run.summary()["peak_replicas"] <= 10 + 1
    peers = {name: run_policy(name, trace, scenario, load) for name in ("rules", "keda")}
    for peer in peers.values():
        assert peer.summary()["peak_replicas"] == scenario.max_replicas
        assert run.replica_seconds < peer.replica_seconds / 3
    assert run.summary()["peak_replicas"] < scenario.max_replicas / 2


def test_a_scale_up_muddled_by_the_next_changes_does_not_hold_a_burst_at_a_2s_start_up() -> None:
    # the first single-verdict hold read 4 -> 5 -> 4 on burst-every-minute as a limit at 2
    # replicas and never probed: 8.37 % attainment. Its verdict judged an interval the count fell
    # in: no evidence now, and the run keeps every message within the SLO
    scenario = Scenario(startup_s=2.0)
    trace = shipped("burst-every-minute")
    told = Told(scenario)
    run = simulate(trace, scenario, told, load=workload(trace, scenario))
    assert run.summary()["slo_attainment"] == 1.0
    assert all(d.observations.get("scaling.ineffective") == 0.0 for _, d in told.decisions
               if "scaling.ineffective" in d.observations)
