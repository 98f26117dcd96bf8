"""The closed loop (agent/core/feedback.py): exact synthetic histories, no I/O.

A queue fed 100 messages/s, 2 replicas measured at 50/s each, 1,000 messages queued (the last
10 s of arrivals): as long as the replicas do what was measured, they start 500 messages per
5 s interval, the head moves 5 s forward in arrival time per 5 s, and stays 10 s old.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import feedback as fb
from docktor.agent.core.decide import decide
from docktor.agent.core.state import ServiceState

STEP, MU = 5.0, 50.0


def svc(**kw: object) -> ServiceConfig:
    return ServiceConfig(name="w", check_interval=STEP, startup_delay=10.0, target_wait=30.0, **kw)  # type: ignore[arg-type]


def points(ages: list[float]) -> list[tuple[float, Mapping[str, float]]]:
    return [(i * STEP, {"queue.rate_in": 100.0, "queue.rate_out": 100.0, "queue.pending": 1000.0,
                        "queue.ack_pending": 2.0, "queue.backlog": 1002.0, "replicas.running": 2.0,
                        "queue.oldest_age": age}) for i, age in enumerate(ages)]


def test_an_age_that_follows_the_prediction_corrects_nothing() -> None:
    assert fb.correct(svc(), points([10.0] * 12), MU) == fb.NONE


def test_an_age_running_ahead_lowers_mu_by_the_share_of_starts_it_implies() -> None:
    # the last interval started a third of the 500 predicted: the head moved 1.67 s, not 5 s
    c = fb.correct(svc(), points([10.0] * 11 + [10.0 + 5.0 - 5.0 / 3]), MU)
    assert math.isclose(c.factor, 1 / 3, rel_tol=1e-6)
    assert (round(c.observed_age, 2), c.predicted_age) == (13.33, 10.0)
    assert c.text(MU) == ("closed loop: oldest message 13s old where 10s was predicted, so 16.67/s per replica, "
                          "not the 50/s measured")


def test_replicas_removed_at_the_start_of_an_interval_are_not_counted_as_working_in_it() -> None:
    # 3 replicas until the tick at 50 s scaled in to 2: the interval after it had 2 at work, which
    # start 500 in 5 s (the head moves 5 s and stays 10 s old); counting the removed one too
    # predicted 750, a head 7.5 s old, and read the age as 2.5 s ahead (mu "overstated" by a third)
    history = points([10.0] * 12)
    # 3 replicas read up to the tick at 50 s, 2 at 55 s; only the last interval has ages at both ends
    history = [(t, {k: v for k, v in o.items() if k != "queue.oldest_age" or i >= 10} | {"replicas.running": 3.0 if i <= 10 else 2.0})
               for i, (t, o) in enumerate(history)]
    assert fb.correct(svc(), history, MU) == fb.NONE


#: the tolerance's bounds for svc(): 5 % of the 30 s target, and half the 5 s interval
FLOOR_S = max(fb.AGE_TOLERANCE_S, fb.AGE_TOLERANCE_SHARE * 30.0)
HALF_S = fb.AGE_TOLERANCE_CHECKS * STEP


def test_noise_within_the_tolerance_corrects_nothing() -> None:
    # too few intervals before to tell how closely the age follows the prediction: half an interval
    assert fb.correct(svc(), points([10.0] * 3 + [10.0 + 0.9 * HALF_S]), MU) == fb.NONE
    # an age that has jumped 1.5 s ahead and back every other check (a real queue's noise, as on
    # examples/nats-multi): the same excess is noise there, however long the queue has had it
    noisy = points([10.0, 11.5] * 9 + [10.0, 10.0 + 0.9 * HALF_S])
    assert fb.tolerance(svc(), STEP, [-0.75, 1.5] * 3) == HALF_S
    assert fb.correct(svc(), noisy, MU) == fb.NONE


def test_after_ages_that_followed_the_prediction_a_smaller_excess_corrects_at_once() -> None:
    # a slowdown on a queue whose age has followed the prediction: the same excess that is noise
    # above is found at its first check, not one later; the head moved 2.75 s where 5 s was
    # predicted, so 275 of the 500 predicted started
    # (the first intervals, with too short an arrival history, miss by more: 16 steady ticks leave
    # them out of the 12 the spread is measured on)
    c = fb.correct(svc(), points([10.0] * 16 + [10.0 + 0.9 * HALF_S]), MU)
    assert math.isclose(c.factor, 0.55, rel_tol=1e-6)
    assert fb.tolerance(svc(), STEP, [0.0] * fb.SPREAD_MIN) == FLOOR_S
    # below the floor it is noise all the same
    assert fb.correct(svc(), points([10.0] * 16 + [10.0 + 0.9 * FLOOR_S]), MU) == fb.NONE
    # and an age that fell behind the prediction as far, a check before, makes it noise too
    assert fb.tolerance(svc(), STEP, [-1.5] + [0.0] * fb.SPREAD_MIN) == HALF_S


def test_the_correction_is_bounded() -> None:
    # the head did not move at all: every start predicted missing; mu is cut to FLOOR, no lower
    c = fb.correct(svc(), points([10.0] * 11 + [15.0]), MU)
    assert c.factor == fb.FLOOR


def test_the_correction_decays_and_is_forgotten() -> None:
    ahead = 10.0 + 5.0 - 5.0 / 3
    recent = fb.correct(svc(), points([10.0] * 11 + [ahead]), MU).factor
    # the same interval three ticks back, the head back to 10 s old since (younger than predicted)
    later = points([10.0] * 11 + [ahead] + [10.0] * 3)
    older = fb.correct(svc(), later, MU).factor
    assert recent < older < 1.0
    assert math.isclose(older, 1 - (1 - 1 / 3) * math.exp(-3 * STEP / (fb.DECAY_CHECKS * STEP)), rel_tol=1e-6)
    gone = points([10.0] * 11 + [ahead] + [10.0] * fb.INTERVALS)
    assert fb.correct(svc(), gone, MU) == fb.NONE


def test_closed_loop_off_is_the_open_loop() -> None:
    assert fb.correct(svc(closed_loop=False), points([10.0] * 11 + [15.0]), MU) == fb.NONE


def test_the_decision_says_what_the_closed_loop_did() -> None:
    ps = points([10.0] * 11 + [15.0])
    state = ServiceState()
    for t, o in ps[:-1]:
        state.history.append((t, dict(o)))
    now, last = ps[-1]
    closed = decide(svc(), last, 2, state, now)
    opened = decide(svc(closed_loop=False), last, 2, state, now)
    assert "closed loop: oldest message 15s old where 10s was predicted" in closed.reason
    assert "closed loop" not in opened.reason
    assert closed.target > opened.target
