"""The trace simulator: conservation, faithful metrics, determinism, trace parsing, the oracle bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docktor.agent.problems import UsageError
from docktor.agent.sim.baselines import HPAController, make_controller, oracle_replica_seconds, run_policy
from docktor.agent.sim.catalog import POLICY_NAMES
from docktor.agent.sim.simulator import Scenario, Workload, simulate, workload
from docktor.agent.sim.trace_file import Trace, parse_trace


class Recorder:
    """Wraps a controller and keeps every observation it was shown."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[attr-defined]
        self.interval = inner.interval  # type: ignore[attr-defined]
        self.seen: list[tuple[float, dict[str, float]]] = []

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return self.inner.initial(scenario, trace)  # type: ignore[attr-defined]

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        self.seen.append((now, dict(obs)))
        return self.inner.tick(obs, current, now)  # type: ignore[attr-defined]


scenarios = st.builds(
    Scenario,
    service_s=st.sampled_from([0.005, 0.02, 0.1, 0.5]),
    cv=st.sampled_from([0.0, 0.5, 1.5]),
    startup_s=st.sampled_from([0.0, 3.0, 10.0]),
    slo_s=st.sampled_from([2.0, 10.0, 30.0]),
    interval_s=st.sampled_from([1.0, 2.0, 5.0]),
    min_replicas=st.integers(0, 2),
    max_replicas=st.integers(2, 12),
    seed=st.integers(0, 1000),
)
traces = st.lists(st.integers(0, 80), min_size=3, max_size=90).map(lambda r: Trace("gen", np.array(r, dtype=np.int64)))
simulated = [p for p in POLICY_NAMES if p != "oracle"]
controllers = [p for p in simulated if p != "hpa-tuned"]  # hpa-tuned is a search over hpa runs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces, scenario=scenarios, policy=st.sampled_from(controllers))
def test_messages_in_equal_served_plus_remaining(trace: Trace, scenario: Scenario, policy: str) -> None:
    rec = Recorder(make_controller(policy, scenario))
    run = simulate(trace, scenario, rec)  # type: ignore[arg-type]
    # every message arrives, is served exactly once and has a wait
    assert run.messages == trace.messages
    assert np.all(run.waits >= -1e-9)
    # at every check: published = acknowledged + in flight + pending, and the published count is
    # exactly the trace's arrivals before that instant (arrivals fall inside their second)
    published = acked = 0.0
    prev_t = None
    for t, o in rec.seen:
        if prev_t is not None:
            published += o["queue.rate_in"] * (t - prev_t)
            acked += o["queue.rate_out"] * (t - prev_t)
            assert published == pytest.approx(float(trace.rates[: int(np.ceil(t))].sum()), abs=1e-6)
            assert published == pytest.approx(acked + o["queue.pending"] + o["queue.ack_pending"], abs=1e-6)
        else:
            assert "queue.rate_in" not in o  # like the NATS source: no rate on the first read
        assert o["queue.backlog"] == o["queue.pending"] + o["queue.ack_pending"]
        assert 0 <= o["queue.ack_pending"] <= o["replicas.running"]
        prev_t = t
    # and the queue is empty at the end
    assert run.backlog[-1] >= 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces, scenario=scenarios)
def test_no_policy_beats_the_oracle(trace: Trace, scenario: Scenario) -> None:
    load = workload(trace, scenario)
    oracle = oracle_replica_seconds(trace, scenario, load)
    assert oracle >= scenario.min_replicas * trace.duration - 1e-9
    for policy in simulated:
        run = run_policy(policy, trace, scenario, load)
        late = int(np.sum(run.waits > scenario.slo_s))
        if late == 0:
            assert run.replica_seconds >= oracle - 1e-6, (policy, run.replica_seconds, oracle)
        # a run that started some messages late is held to the bound that allows as many
        bound = oracle_replica_seconds(trace, scenario, load, misses=late)
        assert run.replica_seconds >= bound - 1e-6, (policy, late, run.replica_seconds, bound)


@settings(max_examples=60, deadline=None)
@given(trace=traces, scenario=scenarios, data=st.data())
def test_the_bound_with_misses_is_below_the_bound_of_whatever_is_left(
    trace: Trace, scenario: Scenario, data: st.DataObject
) -> None:
    # A schedule that starts k messages late meets the SLO for the rest, so it costs at least
    # the bound of the rest: whichever k those are, that bound is at least the one with misses=k.
    load = workload(trace, scenario)
    late = data.draw(st.lists(st.integers(0, max(0, load.arrivals.size - 1)), max_size=12, unique=True))
    late = [i for i in late if i < load.arrivals.size]
    keep = np.ones(load.arrivals.size, dtype=bool)
    keep[late] = False
    rest = Workload(load.arrivals[keep], load.service[keep])
    bound = oracle_replica_seconds(trace, scenario, load, misses=len(late))
    assert oracle_replica_seconds(trace, scenario, rest) >= bound - 1e-9
    # the k longest messages are the ones whose removal lowers it most
    longest = np.argsort(load.service, kind="stable")[load.service.size - len(late) :]
    keep[:] = True
    keep[longest] = False
    assert oracle_replica_seconds(trace, scenario, Workload(load.arrivals[keep], load.service[keep])) >= bound - 1e-9
    assert bound >= scenario.min_replicas * trace.duration - 1e-9
    assert oracle_replica_seconds(trace, scenario, load, misses=0) == oracle_replica_seconds(trace, scenario, load)
    assert bound <= oracle_replica_seconds(trace, scenario, load)


def test_the_bound_with_misses_is_exact_when_no_replica_is_paid_for_anyway() -> None:
    # min 0: every message is extra work, all due inside the trace, so leaving out the k longest
    # lowers the bound by exactly their work, which is what misses=k takes off
    scenario = Scenario(service_s=0.05, cv=1.0, slo_s=2, min_replicas=0, max_replicas=5, seed=3)
    trace = Trace("t", np.array([40, 0, 25] + [0] * 10))
    load = workload(trace, scenario)
    k = 7
    longest = np.argsort(load.service)[-k:]
    keep = np.ones(load.arrivals.size, dtype=bool)
    keep[longest] = False
    rest = oracle_replica_seconds(trace, scenario, Workload(load.arrivals[keep], load.service[keep]))
    assert oracle_replica_seconds(trace, scenario, load) == pytest.approx(float(load.service.sum()))
    assert oracle_replica_seconds(trace, scenario, load, misses=k) == pytest.approx(rest)


def test_single_replica_fifo_waits_are_exact() -> None:
    # one replica, constant 0.4 s service, 2 messages per second: the queue grows by 0.8 s of work
    # per second less the 1 s served, i.e. never; but within a second the second message waits
    scenario = Scenario(service_s=0.4, cv=0.0, startup_s=0, slo_s=10, interval_s=1, min_replicas=1, max_replicas=1)
    trace = Trace("t", np.array([2] * 20))
    load = workload(trace, scenario)
    run = simulate(trace, scenario, make_controller("static", scenario), load=load)
    # recompute the FIFO single-server recursion independently
    free = 0.0
    expected = []
    for a, s in zip(load.arrivals, load.service):
        start = max(a, free)
        expected.append(start - a)
        free = start + s
    assert np.allclose(run.waits, expected)
    assert run.replica_seconds == pytest.approx(20.0)


def test_same_seed_same_result_and_seed_matters() -> None:
    trace = Trace("t", np.array([30, 80, 5, 200, 0, 60] * 10))
    scenario = Scenario(service_s=0.05, max_replicas=20)
    a = simulate(trace, scenario, make_controller("docktor", scenario)).summary()
    b = simulate(trace, scenario, make_controller("docktor", scenario)).summary()
    assert a == b
    other = Scenario(service_s=0.05, max_replicas=20, seed=2)
    c = simulate(trace, other, make_controller("docktor", other))
    assert c.waits.tolist() != simulate(trace, scenario, make_controller("docktor", scenario)).waits.tolist()


def test_new_replicas_take_work_only_after_startup() -> None:
    # nothing can be served before the first replica is ready 7 s in (KEDA from zero: activation
    # at the first 30 s poll, then the start-up delay)
    scenario = Scenario(service_s=0.01, cv=0.0, startup_s=7, slo_s=30, interval_s=5, min_replicas=0, max_replicas=3)
    trace = Trace("t", np.array([10] + [0] * 60))
    run = simulate(trace, scenario, make_controller("keda", scenario))
    assert run.waits.min() >= 7 - 1
    assert run.replica_seconds > 0


def test_hpa_follows_the_documented_math() -> None:
    hpa = HPAController(Scenario(max_replicas=100))
    assert hpa.tick({"queue.backlog": 105.0}, 10, now=0.0) == 10  # within the 10 % tolerance
    assert hpa.tick({"queue.backlog": 250.0}, 10, now=15.0) == 20  # wants 25; +100 % per 15 s
    # scale-up limited to max(+100 %, +4) per period
    assert HPAController(Scenario(max_replicas=100)).tick({"queue.backlog": 1000.0}, 3, now=0.0) == 7
    # scale-down held at the highest recommendation of the last 300 s
    # (25, from t=15), which is above the current 20, so it holds at 20, not higher
    assert hpa.tick({"queue.backlog": 0.0}, 20, now=30.0) == 20
    assert hpa.tick({"queue.backlog": 0.0}, 20, now=316.0) == 1
    # no reading, no change
    assert hpa.tick({}, 20, now=330.0) == 20


@pytest.mark.parametrize(
    "text, where",
    [
        ("t,rate\n0,1\n1,two\n", "x.csv:3"),
        ("t,rate\n0,1\n1\n", "x.csv:3"),
        ("t,rate\n0,1\n# fine\n0,3\n", "x.csv:4"),
        ("t,rate\n0,-1\n", "x.csv:2"),
        ("# only comments\n", "x.csv"),
    ],
)
def test_malformed_traces_name_the_line(text: str, where: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_trace(text, "x", "x.csv")
    assert str(e.value).startswith(where + ":")


def test_trace_comments_and_sparse_seconds() -> None:
    tr = parse_trace("# a comment\nt,rate\n0,5\n# mid\n3,7\n", "x", "x.csv")
    assert tr.rates.tolist() == [5, 0, 0, 7]
    assert tr.messages == 12



class Moves(Recorder):
    """A :class:`Recorder` that also keeps each (current, target) the controller returned."""

    def __init__(self, inner: object) -> None:
        super().__init__(inner)
        self.moves: list[tuple[int, int]] = []

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        target = super().tick(obs, current, now)
        self.moves.append((current, target))
        return target


def test_the_simulator_keeps_a_users_step_limit_as_the_daemon_does() -> None:
    # The simulator runs the daemon's own step(): a user's scale_up_by: 4 under policy: target
    # caps every scale-up at +4 there too (the default +100 % would jump 6 -> 12 on this burst).
    from docktor.agent.config.model import ServiceConfig
    from docktor.agent.sim.baselines import ProductionController

    scenario = Scenario(service_s=0.05, cv=0.0, startup_s=0.0, interval_s=5, min_replicas=1, max_replicas=40)
    trace = Trace("burst", np.array([2000] * 60))
    steps: dict[str, int] = {}
    for name, extra in (("user", {"scale_up_by": 4}), ("defaults", {})):
        svc = ServiceConfig(name="sim", policy="target", target_per_replica=10, min_replicas=1, max_replicas=40,
                            check_interval=5, **extra)  # type: ignore[arg-type]
        ctl = Moves(ProductionController("target", svc))
        simulate(trace, scenario, ctl)  # type: ignore[arg-type]
        steps[name] = max(t - c for c, t in ctl.moves)
    assert steps["user"] == 4
    assert steps["defaults"] > 4  # the same load: the defaults jump further


class AsksForNone:
    """A controller that always asks for zero replicas, whatever min_replicas says."""

    name = "asks-for-none"
    interval = 5.0

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        return 0

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        return 0


def test_a_controller_asking_below_min_replicas_is_held_at_min_and_cannot_undercut_the_oracle() -> None:
    # Before the clamp, simulate() only kept targets >= 0: this controller ran no replica at all
    # on an idle trace and cost 0 replica-seconds, below the oracle's min_replicas x duration.
    scenario = Scenario(service_s=0.05, cv=0.0, startup_s=0, slo_s=10, interval_s=5, min_replicas=2, max_replicas=4)
    trace = Trace("idle", np.zeros(120, dtype=np.int64))
    load = workload(trace, scenario)
    run = simulate(trace, scenario, AsksForNone(), load=load)  # type: ignore[arg-type]
    assert {desired for _, desired, _ in run.timeline} == {2}
    assert {alive for _, _, alive in run.timeline} == {2}
    oracle = oracle_replica_seconds(trace, scenario, load)
    assert oracle == pytest.approx(2 * 120)
    assert run.replica_seconds == pytest.approx(oracle)
