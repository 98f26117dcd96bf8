"""``headroom``: the setting, the pure function, the decision's reason, and the simulator running it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from docktor.agent.config.headroom_setting import Headroom
from docktor.agent.config.load import parse_config
from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.decide import decide, remember
from docktor.agent.core.headroom import PEAK_WINDOW, headroom_replicas, with_headroom
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.problems import UsageError
from docktor.agent.sim.baselines import make_controller
from docktor.agent.sim.simulator import Scenario, simulate, workload
from docktor.agent.sim.trace_file import Trace
from tests.support.cli import docktor

BASE = """
services:
  - name: w
    command: ["true"]
    queue: {kind: nats, url: "nats://127.0.0.1:1", stream: S, consumer: C}
"""


def _service(extra: str) -> ServiceConfig:
    return parse_config(BASE + extra, Path("/tmp/h/docktor.yaml"), {}).services[0]


def _problems(extra: str) -> list[str]:
    with pytest.raises(UsageError) as e:
        _service(extra)
    return [str(p) for p in e.value.problems]


# --------------------------------------------------------------------------- the setting


def test_headroom_is_replicas_or_seconds_with_a_unit_and_none_by_default() -> None:
    assert not _service("").headroom
    assert _service("    headroom: 2\n").headroom == Headroom(replicas=2)
    assert _service("    headroom: '3'\n").headroom == Headroom(replicas=3)
    assert _service("    headroom: 30s\n").headroom == Headroom(seconds=30.0)
    assert _service("    headroom: 1m\n").headroom == Headroom(seconds=60.0)
    assert _service("    headroom: 30s\n").headroom.text() == "30s"
    assert not _service("    headroom: 0\n").headroom


@pytest.mark.parametrize("value", ["2.5", "-1", "'2.5'", "abc", "true", "[2]", ".inf", "'30 parsecs'"])
def test_a_bad_headroom_is_one_line_naming_the_field(value: str) -> None:
    (line,) = _problems(f"    headroom: {value}\n")
    assert line.startswith("services[0].headroom: must be a whole number of replicas (2) or seconds"), line


def test_headroom_under_the_rules_policy_is_refused() -> None:
    # the rules policy steps from the current count: headroom added to each step would climb to the maximum
    (line,) = _problems("    policy: rules\n    headroom: 2\n")
    assert line.startswith("services[0].headroom: applies to the sizing policies (target, docktor)")


def test_docktor_validate_refuses_a_bad_headroom_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(BASE + "    headroom: lots\n")
    r = docktor("validate", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: services[0].headroom: must be a whole number of replicas (2) or seconds of the recent peak "
        "rate with a unit (30s, 1m), got 'lots'"
    ]


# --------------------------------------------------------------------------- the pure function


def _sized(headroom: str, **keys: object) -> ServiceConfig:
    extra = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    return _service(f"    policy: target\n    target_per_replica: 10\n    headroom: {headroom}\n" + extra)


def test_seconds_of_the_peak_rate_are_the_replicas_that_start_them_within_target_wait() -> None:
    # processing_time 0.1 s: 10 messages/s per replica. 30 s of the 40/s peak is 1,200 messages;
    # started within target_wait 30 s they take 1,200 / (10 x 30) = 4 replicas.
    svc = _sized("30s", processing_time="100ms", target_wait="30s")
    state = ServiceState()
    state.history.append((100.0, {"queue.rate_in": 40.0}))
    state.history.append((150.0, {"queue.rate_in": 5.0}))
    extra, why = headroom_replicas(svc, {"queue.rate_in": 2.0}, state, now=200.0)
    assert extra == 4
    assert why.startswith("+4 headroom (30s of the 30 min peak 40/s at 10/s per replica")
    # a peak older than the window no longer counts: 30 s of 5/s is 150 messages, one replica
    assert headroom_replicas(svc, {"queue.rate_in": 2.0}, state, now=100.0 + PEAK_WINDOW)[0] == 1


def test_seconds_without_a_throughput_add_nothing_and_say_why() -> None:
    svc = _sized("30s")
    extra, why = headroom_replicas(svc, {"queue.rate_in": 50.0}, ServiceState(), now=0.0)
    assert extra == 0
    assert "no throughput per replica measured yet" in why


def test_headroom_goes_above_the_policys_count_at_least_min_and_never_on_a_kept_count() -> None:
    svc = _sized("2", min_replicas=1)
    state = ServiceState()
    assert with_headroom(svc, Proposal(5, "needs 5"), {}, 3, state, 0.0) == Proposal(7, "needs 5; +2 headroom")
    # an idle policy's 0 is min_replicas' 1 to the service: 1 + 2, not 0 + 2
    assert with_headroom(svc, Proposal(0, "idle"), {}, 3, state, 0.0).target == 3
    # a count the policy keeps already carries the headroom that set it: adding again would ratchet
    kept = Proposal(7, "within 10%", keeps=True)
    assert with_headroom(svc, kept, {}, 7, state, 0.0) is kept
    # ... only raised to the least a service with headroom runs: min_replicas + headroom
    nothing_measured = Proposal(1, "no throughput measured yet", keeps=True)
    assert with_headroom(svc, nothing_measured, {}, 1, state, 0.0) == Proposal(
        3, "no throughput measured yet; +2 headroom over min_replicas", keeps=True)
    # without headroom the proposal is the policy's own
    plain = _sized("0")
    assert with_headroom(plain, Proposal(5, "needs 5"), {}, 3, state, 0.0) == Proposal(5, "needs 5")


def test_a_count_with_headroom_does_not_follow_the_policy_down_by_a_single_replica() -> None:
    svc = _sized("2")
    state = ServiceState()
    # the policy wavers 15 <-> 14 while 17 run: 14 + 2 = 16 is within the dead band, 17 is kept
    held = with_headroom(svc, Proposal(14, "needs 14"), {}, 17, state, 0.0)
    assert held.target == 17
    assert held.reason == "needs 14; +2 headroom; keeping 17: within 1 of that"
    # further down, it follows
    assert with_headroom(svc, Proposal(12, "needs 12"), {}, 17, state, 0.0).target == 14


# --------------------------------------------------------------------------- in the decision


def test_the_decision_carries_the_headroom_in_its_reason_and_the_guardrails_still_clamp() -> None:
    svc = _sized("2", max_replicas=10, min_replicas=1)
    d = decide(svc, {"queue.backlog": 50.0}, 4, ServiceState(), now=0.0)
    assert (d.proposal, d.target) == (7, 7)
    assert d.reason == "queue.backlog 50 / 10 per replica = 5; +2 headroom"
    # max_replicas still caps the sum
    capped = decide(svc, {"queue.backlog": 95.0}, 8, ServiceState(), now=0.0)
    assert (capped.proposal, capped.target) == (12, 10)
    assert "+2 headroom" in capped.reason and "capped at 10 by max_replicas" in capped.reason


def test_headroom_never_scales_in_by_itself() -> None:
    # the target policy's tolerance keeps 6 (backlog 60 at 10 per replica): the kept count gets
    # no headroom on top, and nothing lower either
    svc = _sized("2")
    state = ServiceState()
    d = decide(svc, {"queue.backlog": 60.0}, 6, state, now=0.0)
    assert (d.decision, d.target) == ("hold", 6)
    # and with the policy's count above the current one, the headroom only adds
    up = decide(svc, {"queue.backlog": 80.0}, 6, state, now=0.0)
    assert up.target == 10 and up.decision == "scale_up"


def test_headroom_is_not_added_while_metrics_are_missing() -> None:
    svc = _sized("2")
    d = decide(svc, {}, 4, ServiceState(), now=0.0)
    assert d.target == 4
    assert "headroom" not in d.reason


def test_headroom_seconds_follow_the_history_remember_keeps() -> None:
    svc = _sized("30s", processing_time="100ms", min_replicas=0)
    state = ServiceState()
    first = decide(svc, {"queue.backlog": 0.0, "queue.rate_in": 40.0}, 0, state, now=0.0)
    remember(state, first, 0.0, acted=True, observations=first.observations)
    later = decide(svc, {"queue.backlog": 0.0, "queue.rate_in": 0.0}, first.target, state, now=10.0)
    # the 40/s read ten seconds ago is still the peak: 4 replicas held on an empty queue
    assert later.target == 4
    assert "+4 headroom (30s of the 30 min peak 40/s" in later.reason


# --------------------------------------------------------------------------- in the simulator


def test_the_simulator_runs_the_headroom_and_it_costs_what_it_holds() -> None:
    # an idle minute, then a crowd: with headroom 2 the docktor policy (the daemon's step(), run
    # by the simulator) holds min + 2 while idle, 3 replicas rather than 1, and pays for them.
    # (What that buys is a benchmark's question: docs/benchmarks.md measures it.)
    trace = Trace("crowd", np.array([0] * 60 + [400] * 60 + [0] * 60, dtype=np.int64))
    runs = {}
    for h in (0, 2):
        scenario = Scenario(service_s=0.05, cv=0.0, startup_s=20, slo_s=10, interval_s=5, min_replicas=1,
                            max_replicas=40, headroom=Headroom(replicas=h))
        load = workload(trace, scenario)
        runs[h] = simulate(trace, scenario, make_controller("docktor", scenario), load=load)  # type: ignore[arg-type]
    idle = [desired for t, desired, _ in runs[2].timeline if 10 <= t < 60]
    assert idle and set(idle) == {3}
    assert {desired for t, desired, _ in runs[0].timeline if 10 <= t < 60} == {1}
    assert runs[2].replica_seconds > runs[0].replica_seconds


def test_simulate_takes_headroom_and_refuses_a_bad_one_with_exit_2() -> None:
    bad = docktor("simulate", "step", "--headroom", "2.5")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --headroom: must be a whole number of replicas (2) or seconds of the recent peak rate with a unit (30s, 1m)"
    ]
    ok = docktor("simulate", "step", "--headroom", "2", "--json")
    assert ok.returncode == 0, ok.stderr
    assert '"policy": "docktor"' in ok.stdout
