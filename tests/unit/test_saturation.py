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
#: 8, 10 (long enough to measure the output's spread there), then 12, where the hold begins (10 -> 12
#: is judged at 100 s with 12 running), kept
HELD = [8] * 6 + [10] * 11 + [12] * 8


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
    points = history([10] * 6 + [12] * 4 + [14], thrashing)  # 10 -> 12 lowered the output; 14 not yet ready
    s = sat.assess(svc(), points)
    assert s.suspect and s.unverified
    held = sat.hold(svc(), s, Proposal(30, "needs 30"), 14, now=points[-1][0])
    assert held.target == 14 and "until the next one is measured" in held.reason


def test_one_clean_flat_scale_up_holds_one_that_lowered_the_output_does_not() -> None:
    # a limit splits the same output among more replicas; a slowdown (or a thrashing database)
    # lowers it: that alone is suspect, and it takes a second ineffective scale-up to hold
    flat = sat.assess(svc(), history(HELD, capped))
    assert flat.verdicts[-1].clean and flat.verdicts[-1].flat and flat.ineffective
    points = history(HELD, capped)
    held = sat.hold(svc(), flat, Proposal(40, "needs 40"), 12, now=points[-1][0])
    assert held.target == 12 and "1 scale-up in the last" in held.reason and held.reason.endswith("Holding at 12")
    fell = sat.assess(svc(), history(HELD, thrashing))
    assert not fell.verdicts[-1].flat and fell.suspect and not fell.ineffective
    assert sat.hold(svc(), fell, Proposal(14, "needs 14"), 12, now=len(HELD) * STEP).target == 14


def test_a_flat_verdict_whose_count_moved_again_is_not_enough_alone() -> None:
    # 10 -> 12, then 13 while 12's replicas start: the verdict of 10 -> 12 judges an interval the
    # count changed in, so it is not clean, and one of those does not start a hold
    counts = [8] * 6 + [10] * 4 + [12] + [13] * 7
    s = sat.assess(svc(), history(counts, capped))
    judged = [v for v in s.verdicts if v.ready_before == 10]
    assert judged and not judged[0].effective and not judged[0].clean
    assert sat.hold_start(judged[:1]) is None
    # nor does one whose interval before had replicas starting halfway: 8 surely ready, but the
    # output (450/s) is partly the 2 starting, so the per-replica rate before is not the 8's
    points = history([8] * 6 + [10] + [12] * 8, capped)
    points[6] = (points[6][0], {**points[6][1], "queue.rate_out": 450.0})
    s = sat.assess(svc(), points)
    assert not s.verdicts[-1].effective and s.verdicts[-1].flat and not s.verdicts[-1].clean
    assert s.suspect and not s.ineffective


#: what the simulator measured at a 2 s start-up on burst-every-minute (``docktor bench --traces
#: agent/sim/traces/burst-every-minute.csv --startup-s 2``): t, replicas running, rate_out, pending.
#: 2 -> 4 at 60 s (its replicas ready 3 s into the interval ending at 60), 4 -> 5 at 65 s, the
#: policy's own 5 -> 4 at 70 s; every replica busy (about 50/s each) throughout
BURST_2S = [(30, 2, 77.2, 1367), (35, 2, 105.6, 1328), (40, 2, 99.4, 1326), (45, 2, 99.6, 1311),
            (50, 2, 100.6, 1289), (55, 2, 101.8, 3291), (60, 4, 157.6, 5036), (65, 5, 227.4, 4370),
            (70, 4, 198.8, 3852), (75, 4, 202.6, 3319), (80, 4, 196.2, 2843), (85, 4, 193.2, 2410)]


def test_a_scale_up_whose_count_fell_again_before_its_judgment_is_no_evidence() -> None:
    # the first attempt read 4 -> 5 (judged at 75 s against the 157.6/s of 2 "ready" replicas) as
    # "+45/s where +157.6/s was expected", held at 2 and never probed: 8.37 % attainment
    s_ = svc().model_copy(update={"startup_delay": 2.0})
    points = [(float(t), {"replicas.running": float(n), "queue.rate_out": out, "queue.pending": float(p),
                          "queue.rate_in": 100.0, "queue.backlog": float(p + n)}) for t, n, out, p in BURST_2S]
    s = sat.assess(s_, points)
    assert all(v.effective for v in s.verdicts) and not s.streak and not s.ineffective
    wanted = Proposal(14, "needs 14")
    assert sat.hold(s_, s, wanted, 4, now=points[-1][0]) == wanted


#: the hold at 12 (``HELD``), then the policy's own scale-in to the 10 that reach the cap: no
#: replica is spare, so a lifted limit would not show by itself, and a probe comes
BACK_TO_CAP = HELD + [10] * (int(sat.hold_s(svc()) / STEP) + 4)


def test_a_hold_with_no_spare_replica_probes_then_resumes_when_throughput_follows() -> None:
    s_ = svc()
    counts = list(BACK_TO_CAP)
    points = history(counts, capped)
    s = sat.assess(s_, points)
    assert s.ineffective and s.lifted is None
    probe = sat.hold(s_, s, Proposal(40, "needs 40"), 10, now=points[-1][0])
    assert 10 < probe.target <= 10 + sat.probe_step(s_, s.streak[-1]) and "Probing with" in probe.reason
    # the limit went away: the probe's replicas add what they should, and scaling is free again
    n = len(counts)
    counts += [probe.target] * 5
    points = points + history(counts, helpful)[n:]  # before the probe, what was measured then
    s = sat.assess(s_, points)
    assert s.verdicts[-1].effective and not s.ineffective
    assert sat.hold(s_, s, Proposal(40, "needs 40"), probe.target, now=points[-1][0]).target == 40


def test_replicas_held_past_the_limit_show_it_lift_without_a_probe() -> None:
    s_ = svc()
    # held at 12 where 10 reach the cap: the 2 spare would add 100/s if the limit lifted, which a
    # 30 s mean of counts can tell; so no probe for as long as a probe period at its longest
    counts = HELD + [12] * int(sat.MAX_QUIET_S / STEP - 6)
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


def test_a_hold_on_spare_replicas_still_probes_once_a_probe_period_has_passed() -> None:
    # a wrong verdict costs at most the longest probe period, never the rest of the trace
    s_ = svc()
    counts = HELD + [12] * int(sat.MAX_QUIET_S / STEP + 2)
    points = history(counts, capped)
    s = sat.assess(s_, points)
    assert s.lifted is False
    probe = sat.hold(s_, s, Proposal(40, "needs 40"), 12, now=points[-1][0])
    assert probe.target > 12 and "Probing with" in probe.reason


def test_a_hold_whose_output_fell_below_its_plateau_probes() -> None:
    # held at 12 past a 500/s limit, then the workers slow down (or the policy scaled in below
    # what was measured): the output left the plateau, the spare test is not trusted, probes go on
    s_ = svc()
    counts = HELD + [12] * (int(sat.hold_s(s_) / STEP) + 4)
    points = history(counts, capped)
    points = points[:len(HELD)] + [(t, {**o, "queue.rate_out": 250.0}) for t, o in points[len(HELD):]]
    s = sat.assess(s_, points)
    assert s.ineffective and s.lifted is None
    probe = sat.hold(s_, s, Proposal(40, "needs 40"), 12, now=points[-1][0])
    assert probe.target > 12 and "Probing with" in probe.reason


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


def test_one_flat_verdict_within_the_output_s_own_spread_is_not_enough_alone() -> None:
    # workers whose service times vary a lot (cv 2) spread the output far wider than counting
    # noise: +-60/s from one interval to the next at 10 replicas. 10 -> 12 adding nothing is then
    # within that spread: one of two, not a hold on its own
    wobble = [0.0, 60.0, -60.0, 40.0]
    points = history(HELD, capped)
    points = [(t, {**o, "queue.rate_out": o["queue.rate_out"] + wobble[i % 4]}) if i < 17 else (t, o)
              for i, (t, o) in enumerate(points)]
    s = sat.assess(svc(), points)
    v = [v for v in s.verdicts if v.ready_before == 10][0]
    assert not v.effective and v.flat and not v.clean
    assert s.suspect and not s.ineffective
