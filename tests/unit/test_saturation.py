""""Scaling is not helping" (agent/core/saturation.py): exact synthetic histories, no I/O.

Every history is a tick every 5 s of a service whose replicas take 10 s to start; what the queue
completes per second is a function of the replicas ready then (``rate_of``), so each test says
exactly what the workers could do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import saturation as sat
from docktor.agent.core.decide import decide
from docktor.agent.core.derived import describe
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState

STEP, STARTUP, MU = 5.0, 10.0, 50.0


def svc() -> ServiceConfig:
    return ServiceConfig(name="w", min_replicas=1, max_replicas=50, check_interval=STEP, startup_delay=STARTUP,
                         target_wait=30.0)


def history(counts: list[int], rate_of: Callable[[int], float], pending: float = 5000.0
            ) -> list[tuple[float, Mapping[str, float]]]:
    """One point per tick: ``counts[i]`` replicas running at tick i; ``rate_out`` is ``rate_of``
    the replicas ready then (the fewest running within the start-up delay before)."""
    points: list[tuple[float, Mapping[str, float]]] = []
    for i, running in enumerate(counts):
        t = i * STEP
        ready = min(counts[j] for j in range(len(counts)) if t - STARTUP <= j * STEP <= t)
        points.append((t, {"replicas.running": float(running), "queue.rate_out": rate_of(ready),
                           "queue.pending": pending, "queue.rate_in": 800.0, "queue.backlog": pending + running}))
    return points


def capped(ready: int) -> float:
    return min(ready * MU, 500.0)  # a database that completes 500 messages/s: 10 replicas' worth


def helpful(ready: int) -> float:
    return ready * MU


#: 8 replicas, then +2 every 20 s (each measured before the next)
CLIMB = [8] * 6 + [10] * 4 + [12] * 4 + [14] * 4 + [16] * 4


def test_two_scale_ups_past_a_throughput_cap_make_it_not_helping() -> None:
    s = sat.assess(svc(), history(CLIMB, capped))
    # 8 -> 10 reached the cap (worked), 10 -> 12 and 12 -> 14 added nothing
    assert [v.effective for v in s.verdicts][:3] == [True, False, False]
    assert s.ineffective
    assert sat.observe(s) == {"scaling.ineffective": 1.0}


def test_scale_ups_that_add_throughput_are_never_held() -> None:
    s = sat.assess(svc(), history(CLIMB, helpful))
    assert s.verdicts and all(v.effective for v in s.verdicts)
    assert not s.ineffective and sat.observe(s) == {"scaling.ineffective": 0.0}
    wanted = Proposal(30, "needs 30")
    assert sat.hold(svc(), s, wanted, 16, now=CLIMB.__len__() * STEP) == wanted


def test_the_hold_keeps_the_count_and_says_why() -> None:
    points = history(CLIMB, capped)
    s = sat.assess(svc(), points)
    held = sat.hold(svc(), s, Proposal(40, "needs 40: 9000 queued"), 16, now=points[-1][0])
    assert held.target == 16
    assert "scale-ups in the last" in held.reason and "added no throughput" in held.reason
    assert "a downstream limit?" in held.reason and held.reason.endswith("Holding at 16")


@pytest.mark.parametrize("wanted", [16, 12, 3, 0])
def test_never_scales_in_on_not_helping(wanted: int) -> None:
    points = history(CLIMB, capped)
    s = sat.assess(svc(), points)
    assert s.ineffective
    proposal = Proposal(wanted, "the policy's own count")
    assert sat.hold(svc(), s, proposal, 16, now=points[-1][0]) == proposal


def test_below_where_scaling_stopped_helping_it_may_come_back_up_to_there() -> None:
    points = history(CLIMB, capped)
    s = sat.assess(svc(), points)
    first = s.streak[0].ready_before  # 10: the count the first ineffective scale-up started from
    again = sat.hold(svc(), s, Proposal(40, "needs 40"), 4, now=points[-1][0])
    assert again.target == first


def test_counting_noise_is_not_a_verdict() -> None:
    # 0.5 messages/s per replica: +2 replicas should add 1/s, less than three standard
    # deviations of two 5 s counts of ~5/s; whatever was measured, nothing is concluded
    s = sat.assess(svc(), history(CLIMB, lambda ready: 5.0))
    assert s.verdicts == () and not s.ineffective


def test_jitter_on_a_fleet_that_scales_does_not_trigger_it() -> None:
    wobble = [1.0, 0.9, 1.1, 0.95, 1.05, 0.9, 1.1]  # +-10 % from tick to tick
    calls = iter(range(10_000))
    s = sat.assess(svc(), history(CLIMB, lambda ready: ready * MU * wobble[next(calls) % len(wobble)]))
    assert not s.ineffective


def test_one_slowdown_alone_is_not_a_limit() -> None:
    # the workers got 3x slower just as 8 -> 10 came (a deploy): that one scale-up reads as
    # ineffective; the next ones, measured at the new speed, add what they should
    slow_from = 6 * STEP
    counts = [8] * 6 + [10] * 4 + [12] * 4 + [14] * 4
    points = history(counts, helpful)
    points = [(t, {**o, "queue.rate_out": o["queue.rate_out"] / (3 if t > slow_from else 1)}) for t, o in points]
    s = sat.assess(svc(), points)
    assert [v.effective for v in s.verdicts] == [False, True, True]
    assert not s.ineffective


def test_a_queue_that_empties_after_a_scale_up_is_a_scale_up_that_worked() -> None:
    points = history([8] * 6 + [10] * 4, capped)
    points[-1] = (points[-1][0], {**points[-1][1], "queue.pending": 0.0})
    points[-2] = (points[-2][0], {**points[-2][1], "queue.pending": 0.0})
    s = sat.assess(svc(), points)
    assert s.verdicts and s.verdicts[-1].effective


def test_while_one_scale_up_is_suspect_the_next_waits_for_its_own_verdict() -> None:
    points = history([10] * 6 + [12] * 4 + [14], capped)  # 10 -> 12 added nothing; 14 not yet ready
    s = sat.assess(svc(), points)
    assert s.suspect and s.unverified
    held = sat.hold(svc(), s, Proposal(30, "needs 30"), 14, now=points[-1][0])
    assert held.target == 14 and "until the next one is measured" in held.reason


def test_after_the_hold_a_probe_then_resumes_when_throughput_follows() -> None:
    s_ = svc()
    quiet = int(sat.probe_wait(s_, 3) / STEP) + 1  # the climb's three failed scale-ups
    counts = CLIMB + [16] * quiet
    points = history(counts, capped)
    s = sat.assess(s_, points)
    probe = sat.hold(s_, s, Proposal(40, "needs 40"), 16, now=points[-1][0])
    assert 16 < probe.target <= 16 + sat.probe_step(s_, s.streak[-1]) and "Probing with" in probe.reason
    # the limit went away: the probe's replicas add what they should, and scaling is free again
    counts += [probe.target] * 5
    lifted = {len(points) + k for k in range(5)}
    points = history(counts, lambda ready: helpful(ready))
    # before the probe, the history is the capped one (what was measured then)
    capped_points = history(counts, capped)
    points = [capped_points[i] if i not in lifted else points[i] for i in range(len(points))]
    s = sat.assess(s_, points)
    assert s.verdicts[-1].effective and not s.ineffective
    assert sat.hold(s_, s, Proposal(40, "needs 40"), probe.target, now=points[-1][0]).target == 40


def test_the_decision_carries_scaling_ineffective_and_holds() -> None:
    points = history(CLIMB, capped, pending=40_000.0)  # far more than 16 replicas could start in time
    state = ServiceState()
    for t, o in points[:-1]:
        state.history.append((t, dict(o)))
    now, last = points[-1]
    d = decide(svc(), {**last, "queue.ack_pending": 16.0}, 16, state, now)
    assert d.observations["scaling.ineffective"] == 1.0
    assert d.target == 16 and "a downstream limit?" in d.reason


def test_scaling_ineffective_is_in_the_metric_vocabulary() -> None:
    info = describe("scaling.ineffective")
    assert info is not None and "no throughput" in info.help


def test_a_rule_may_name_scaling_ineffective() -> None:
    text = """
services:
  - name: w
    command: ["true"]
    queue: {kind: nats, url: "nats://127.0.0.1:1", stream: S, consumer: C}
    rules:
      scale_down_when:
        - {metric: scaling.ineffective, op: "==", value: 0}
"""
    svc = parse_config(text, Path("/tmp/d.yaml"), {}).services[0]
    assert svc.rule_metrics() == {"scaling.ineffective"}
