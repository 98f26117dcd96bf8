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


def thrashing(ready: int) -> float:
    return capped(ready) - 50.0 * max(0, ready - 10)  # a database past its limit gets worse


#: 8 replicas, then +2 every 20 s (each measured before the next)
CLIMB = [8] * 6 + [10] * 4 + [12] * 4 + [14] * 4 + [16] * 4
#: 8, 10, then 12, where the hold begins (10 -> 12 is judged at 65 s with 12 running), kept
HELD = [8] * 6 + [10] * 4 + [12] * 8


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
    points = history(HELD, capped)
    s = sat.assess(svc(), points)
    assert s.held_at == 12
    held = sat.hold(svc(), s, Proposal(40, "needs 40: 9000 queued"), 12, now=points[-1][0])
    assert held.target == 12
    assert "1 scale-up in the last" in held.reason and "added no throughput" in held.reason
    assert "a downstream limit?" in held.reason and held.reason.endswith("Holding at 12")


def test_one_flat_scale_up_holds_one_that_lowered_the_output_does_not() -> None:
    # a limit splits the same output among more replicas; a slowdown (or a thrashing database)
    # lowers it: that alone is suspect, and it takes a second ineffective scale-up to hold
    flat = sat.assess(svc(), history(HELD, capped))
    assert [v.effective for v in flat.verdicts][-1:] == [False] and flat.ineffective
    fell = sat.assess(svc(), history(HELD, thrashing))
    assert not fell.verdicts[-1].flat and fell.suspect and not fell.ineffective
    assert sat.hold(svc(), fell, Proposal(14, "needs 14"), 12, now=HELD.__len__() * STEP).target == 14


@pytest.mark.parametrize("wanted", [12, 8, 3, 0])
def test_never_scales_in_on_not_helping(wanted: int) -> None:
    points = history(HELD, capped)
    s = sat.assess(svc(), points)
    assert s.ineffective
    proposal = Proposal(wanted, "the policy's own count")
    assert sat.hold(svc(), s, proposal, 12, now=points[-1][0]) == proposal


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
    points = history([10] * 6 + [12] * 4 + [14], thrashing)  # 10 -> 12 lowered the output; 14 not yet ready
    s = sat.assess(svc(), points)
    assert s.suspect and s.unverified
    held = sat.hold(svc(), s, Proposal(30, "needs 30"), 14, now=points[-1][0])
    assert held.target == 14 and "until the next one is measured" in held.reason


#: the hold at 12 (``HELD``), then the policy's own scale-in to the 10 that reach the cap: those
#: would not show a lifted limit by themselves (no spare), so when it asks for more, a probe
BACK_TO_CAP = HELD + [10] * (int(sat.hold_s(svc()) / STEP) + 4)


def probe_history(rate_of: Callable[[int], float]) -> tuple[list[int], list[tuple[float, Mapping[str, float]]], int]:
    """``BACK_TO_CAP`` until its first probe, then the probe's replicas running long enough for
    their verdict, completing what ``rate_of`` says (before the probe the history is the capped
    one, what was measured then)."""
    s_ = svc()
    counts = list(BACK_TO_CAP)
    points = history(counts, capped)
    s = sat.assess(s_, points)
    assert s.held_at == 12 and s.lifted is None
    probe = sat.hold(s_, s, Proposal(40, "needs 40"), 10, now=points[-1][0])
    assert probe.target == 11 and "Probing with 1 more" in probe.reason  # one replica: its verdict can tell
    n = len(counts)
    counts += [probe.target] * 5
    return counts, points + history(counts, rate_of)[n:], probe.target


def test_a_probe_that_adds_throughput_ends_the_hold() -> None:
    counts, points, probe = probe_history(helpful)  # the limit went away
    s = sat.assess(svc(), points)
    assert s.verdicts[-1].effective and not s.ineffective
    assert sat.hold(svc(), s, Proposal(40, "needs 40"), probe, now=points[-1][0]).target == 40


def test_a_probe_that_adds_nothing_is_given_back_and_the_next_waits_longer() -> None:
    s_ = svc()
    counts, points, probe = probe_history(capped)
    s = sat.assess(s_, points)
    assert s.ineffective and len(s.probes) == 1 and not s.verdicts[-1].effective
    back = sat.hold(s_, s, Proposal(40, "needs 40"), probe, now=points[-1][0])
    assert back.target == 10 and "giving it back, holding at 10" in back.reason
    # never below what the policy itself asks: its own scale-in stands
    assert sat.hold(s_, s, Proposal(9, "needs 9"), probe, now=points[-1][0]).target == 9
    # given back, it holds at 10 (not 11) until the doubled wait is over
    n = len(counts)
    counts += [10] * int(sat.probe_wait(s_, 1) / STEP - 6)
    points = points + history(counts, capped)[n:]
    s = sat.assess(s_, points)
    assert sat.probe_wait(s_, 1) == 2 * sat.probe_wait(s_, 0)
    still = sat.hold(s_, s, Proposal(40, "needs 40"), 10, now=points[-1][0])
    assert still.target == 10 and still.reason.endswith("Holding at 10")


def test_replicas_held_past_the_limit_show_it_lift_without_a_probe() -> None:
    s_ = svc()
    # held at 12 where 10 reach the cap: the 2 spare would add 100/s if the limit lifted, which a
    # 30 s mean of counts can tell; so no probe, however long the hold
    counts = HELD + [12] * int(sat.MEMORY_S / 2 / STEP)
    points = history(counts, capped)
    s = sat.assess(s_, points)
    assert s.lifted is False
    held = sat.hold(s_, s, Proposal(40, "needs 40"), 12, now=points[-1][0])
    assert held.target == 12 and "would rise with these if the limit lifted" in held.reason
    # the limit goes away: the 12 held complete 600/s, and the hold ends with no replica added
    n = len(counts)
    counts += [12] * 8
    points = points + history(counts, helpful)[n:]
    s = sat.assess(s_, points)
    assert s.lifted is True
    assert sat.hold(s_, s, Proposal(40, "needs 40"), 12, now=points[-1][0]).target == 40


def test_the_decision_carries_scaling_ineffective_and_holds() -> None:
    points = history(HELD, capped, pending=40_000.0)  # far more than 12 replicas could start in time
    state = ServiceState()
    for t, o in points[:-1]:
        state.history.append((t, dict(o)))
    now, last = points[-1]
    d = decide(svc(), {**last, "queue.ack_pending": 12.0}, 12, state, now)
    assert d.observations["scaling.ineffective"] == 1.0
    assert d.target == 12 and "a downstream limit?" in d.reason


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


def test_a_hold_without_probes_renews_its_verdict_before_it_is_forgotten() -> None:
    s_ = svc()
    # held at 12 past the cap (no probe needed), until the verdict that began it is about to fall
    # out of the memory: one probe then, whose verdict keeps the hold going
    counts = HELD + [12] * int((sat.MEMORY_S - sat.hold_s(s_)) / STEP)
    points = history(counts, capped)
    s = sat.assess(s_, points)
    assert s.lifted is False and points[-1][0] - s.streak[-1].seen_at >= sat.MEMORY_S - sat.hold_s(s_)
    renew = sat.hold(s_, s, Proposal(40, "needs 40"), 12, now=points[-1][0])
    # 500/s shared by 12 is 41.7/s a replica, under the noise of a verdict at 500/s (42.4/s): two
    step = sat.probe_step(s_, s.streak[-1], 12)
    assert step == 2 and renew.target == 12 + step and "Probing with 2 more" in renew.reason
    # a tick before that horizon, it held
    horizon = s.streak[-1].seen_at + sat.MEMORY_S - sat.hold_s(s_)
    before = [p for p in points if p[0] < horizon]
    s = sat.assess(s_, before)
    assert sat.hold(s_, s, Proposal(40, "needs 40"), 12, now=before[-1][0]).target == 12
