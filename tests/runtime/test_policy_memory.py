"""The policy's memory across restarts (``agent/runtime/policy_memory.py``, ``agent/core/recalled.py``):
the "scaling is not helping" verdicts, the closed loop's correction and the pending effect checks
go into the state file and come back, each dropped with a line when it no longer means anything
(too old, another executor, a piece no clock or count can mean), never a crash.

The histories are the exact synthetic ones of tests/unit/test_saturation.py and
tests/unit/test_feedback.py; the restart is :func:`~docktor.agent.runtime.persist.capture` then
:func:`~docktor.agent.runtime.persist.restore` through JSON, in another monotonic clock."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import load_config
from docktor.agent.config.model import LLMConfig, ServiceConfig
from docktor.agent.core import feedback as fb
from docktor.agent.core import saturation as sat
from docktor.agent.core.decide import decide, remember
from docktor.agent.core.effect import Expectation
from docktor.agent.core.recalled_loop import faded
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.identity import Identity
from docktor.agent.runtime.persist import Restored, SavedState, capture, restore
from docktor.agent.runtime.supervisor import Supervisor
from docktor.agent.timestamps import rfc3339
from docktor.tools import registry
from docktor.tools.testing import FakeExecutor, FakeFleet, FakeQueue, FakeSource
from tests.support.clocks import FakeClock
from tests.unit.test_feedback import points as aged_points
from tests.unit.test_saturation import CLIMB, capped, history

STEP = 5.0
WALL = 1_900_000_000.0  # the wall clock when the old daemon saved


def svc(**kw: Any) -> ServiceConfig:
    return ServiceConfig(name="w", min_replicas=1, max_replicas=50, check_interval=STEP, startup_delay=10.0,
                         target_wait=30.0, **kw)


def ident(s: ServiceConfig) -> Identity:
    return Identity.of(s, None, LLMConfig())


def with_history(points: list[tuple[float, Mapping[str, float]]]) -> ServiceState:
    state = ServiceState()
    for t, o in points:
        state.history.append((t, dict(o)))
    return state


def saved(s: ServiceConfig, state: ServiceState) -> dict[str, Any]:
    """The state file the old daemon wrote right after its last tick (its monotonic clock: the history's)."""
    mono = state.history[-1][0] if state.history else 0.0
    doc = capture(SavedState(ident(s), state), service=s.name, window=s.scale_down_stabilization, wall=WALL, mono=mono, svc=s)
    return json.loads(json.dumps(doc))  # as the file holds it


def back(doc: Mapping[str, Any], s: ServiceConfig, *, down: float, mono: float = 7.0, identity: Identity | None = None) -> Restored:
    """A new daemon (monotonic clock at ``mono``) after ``down`` seconds of wall time."""
    return restore(doc, identity or ident(s), s, wall=WALL + down, mono=mono)


# --------------------------------------------------------------------------- "scaling is not helping"


def capped_climb() -> tuple[ServiceState, Mapping[str, float]]:
    """The climb past a 500/s cap of test_saturation (the last two scale-ups judged added nothing),
    then the tick to decide: 32 messages in flight, so Little's law measures a throughput at once."""
    points = history(CLIMB, capped, pending=40_000.0)  # far more than 16 replicas could start in time
    return with_history(points[:-1]), {**points[-1][1], "queue.ack_pending": 32.0}


def test_the_hold_survives_a_restart_and_holds_the_first_decision() -> None:
    s = svc()
    state, obs = capped_climb()
    doc = saved(s, state)
    assert [v["effective"] for v in doc["memory"]["verdicts"]["judged"]] == [True, False, False]

    restored = back(doc, s, down=20.0)
    assert "3 scale-up verdict(s), the last 2 added no throughput" in restored.kept
    again = restored.saved.state
    assert again.recalled is not None and not again.history
    # the verdicts' instants in the new clock, the 20 s spent down counted
    judged = sat.assess(s, list(state.history)).verdicts[-1].judged_at
    assert again.recalled.verdicts[-1].judged_at == pytest.approx(7.0 - 20.0 - (state.history[-1][0] - judged))

    d = decide(s, obs, 16, again, 7.0)  # the first tick: no history at all
    assert d.observations["scaling.ineffective"] == 1.0
    assert d.target == 16 and "added no throughput" in d.reason and d.reason.endswith("Holding at 16")

    # the same tick without the memory (a daemon before this change) climbs past the cap again
    forgetful = back({k: v for k, v in doc.items() if k != "memory"}, s, down=20.0).saved.state
    d = decide(s, obs, 16, forgetful, 7.0)
    assert d.observations["scaling.ineffective"] == 0.0 and d.target > 16


def test_time_spent_down_counts_toward_the_probe_and_a_long_stop_forgets_the_verdicts() -> None:
    s = svc()
    state, obs = capped_climb()
    doc = saved(s, state)
    wait = sat.probe_wait(s, 2)  # the climb's two failed scale-ups the history judged
    probing = decide(s, obs, 16, back(doc, s, down=wait + 1.0).saved.state, 7.0)
    assert probing.target > 16 and "Probing with" in probing.reason

    gone = back(doc, s, down=sat.MEMORY_S + 60.0)
    assert gone.saved.state.recalled is None
    assert f"3 scale-up verdict(s): older than {sat.MEMORY_S:.0f} s" in gone.discarded
    assert decide(s, obs, 16, gone.saved.state, 7.0).observations["scaling.ineffective"] == 0.0


def test_the_restored_verdicts_are_saved_again_until_new_ones_come() -> None:
    """A second restart before the history has any verdict of its own keeps the first one's."""
    s = svc()
    state, _ = capped_climb()
    first = back(saved(s, state), s, down=10.0, mono=100.0).saved.state
    first.history.append((100.0, {"queue.rate_out": 500.0, "replicas.running": 16.0, "queue.pending": 40_000.0}))
    doc = saved(s, first)
    assert len(doc["memory"]["verdicts"]["judged"]) == 3
    assert "3 scale-up verdict(s), the last 2 added no throughput" in back(doc, s, down=10.0).kept


# --------------------------------------------------------------------------- the closed loop


def slowed() -> ServiceState:
    """test_feedback's queue whose head did not move in the last interval: mu cut to FLOOR."""
    state = with_history(aged_points([10.0] * 11 + [15.0]))
    assert fb.correct(svc(), list(state.history), 50.0).factor == fb.FLOOR
    return state


def test_the_closed_loop_correction_survives_a_restart_faded_as_it_would_have() -> None:
    s = svc()
    doc = saved(s, slowed())
    c = doc["memory"]["correction"]
    assert (c["factor"], c["mu"], c["at"]) == (fb.FLOOR, 50.0, WALL)
    restored = back(doc, s, down=5.0, mono=1000.0)
    again = restored.saved.state
    assert again.recalled is not None and again.recalled.correction is not None
    assert again.recalled.correction.at == pytest.approx(995.0)
    assert any(k.startswith("closed-loop correction (x0.25 of 50/s per replica, 5 s old)") for k in restored.kept)

    # two ticks after the restart, the age as predicted again: the new history corrects nothing,
    # the saved correction, faded by the 15 s since it was found, still does
    after = aged_points([10.0] * 3)
    for t, o in after[:2]:
        again.history.append((1000.0 + t, dict(o)))
    now = 1000.0 + after[2][0]
    d = decide(s, after[2][1], 2, again, now)
    expected = faded(again.recalled.correction, s, now)
    assert expected == pytest.approx(1 - 0.75 * math.exp(-15.0 / (fb.DECAY_CHECKS * STEP)))
    assert f"so {50.0 * expected:.4g}/s per replica, not the 50/s measured (found before the restart)" in d.reason
    fresh = decide(s, after[2][1], 2, with_history([(1000.0 + t, o) for t, o in after[:2]]), now)
    assert d.target > fresh.target  # sized with the slower throughput, not the one measured afresh


def test_an_effect_check_after_a_restart_predicts_with_the_restored_correction() -> None:
    """The record of an action decided with a restored correction predicts with it too: the
    throughput the policy sized with, not the 50/s measured afresh (what it used before)."""
    s = svc()
    again = back(saved(s, slowed()), s, down=5.0, mono=1000.0).saved.state
    assert again.recalled is not None and again.recalled.correction is not None
    after = aged_points([10.0] * 3)
    for t, o in after[:2]:
        again.history.append((1000.0 + t, dict(o)))
    now = 1000.0 + after[2][0]
    d = decide(s, after[2][1], 2, again, now)
    assert d.changes and d.expecting is not None
    used = 50.0 * faded(again.recalled.correction, s, now)
    assert used < 50.0 and d.expecting.mu == pytest.approx(used)
    assert d.carried is not None and d.carried.sized is not None and d.carried.sized.corrected == d.expecting.mu


def ticked(s: ServiceConfig, points: list[tuple[float, Mapping[str, float]]], current: int) -> ServiceState:
    """``points`` as a daemon lives them: each one decided, then remembered."""
    state = ServiceState()
    for t, o in points:
        d = decide(s, o, current, state, t)
        remember(state, d, t, acted=False, observations=d.observations)
    return state


@pytest.mark.parametrize("case", ["climb", "slowed"])
def test_the_memory_saved_is_what_the_last_decision_used(case: str) -> None:
    """A save reads the verdicts and the correction the tick's decision found (``state.carried``),
    and they are what working them out from the history again finds."""
    s = svc()
    climb = history(CLIMB, capped, pending=40_000.0)
    points, current = ([(t, {**o, "queue.ack_pending": 32.0}) for t, o in climb], 16) if case == "climb" \
        else (aged_points([10.0] * 11 + [15.0]), 2)
    state = ticked(s, points, current)
    assert state.carried is not None and state.carried.saturation is not None and state.carried.sized is not None
    doc = saved(s, state)
    assert doc["memory"] == saved(s, dataclasses.replace(state, carried=None))["memory"]
    if case == "climb":  # the climb's verdicts, and the last tick's scale-up judged too
        assert [v["effective"] for v in doc["memory"]["verdicts"]["judged"]] == [True, False, False, False]
    else:
        c, used = doc["memory"]["correction"], state.carried.sized
        assert (c["factor"], c["mu"], c["at"]) == (used.factor, used.mu, WALL) and used.factor < 1


def test_a_correction_older_than_the_loop_looks_back_or_with_the_loop_off_is_dropped() -> None:
    s = svc()
    doc = saved(s, slowed())
    old = back(doc, s, down=fb.INTERVALS * STEP + 1.0)
    assert old.saved.state.recalled is None
    assert f"closed-loop correction: {fb.INTERVALS * STEP + 1.0:.0f} s old (kept up to {fb.INTERVALS * STEP:.0f} s)" in old.discarded
    off = svc(closed_loop=False)
    dropped = back(doc, off, down=5.0, identity=ident(s))
    assert "closed-loop correction: the closed loop is off (policy: docktor, closed_loop: true)" in dropped.discarded


def test_a_measured_throughput_that_caught_up_leaves_nothing_of_the_correction() -> None:
    from docktor.agent.core.recalled import Recalled, SavedCorrection
    from docktor.agent.core.recalled_loop import correction

    s = svc()
    state = ServiceState(recalled=Recalled(correction=SavedCorrection(0.5, 50.0, 0.0)))
    assert correction(fb.NONE, s, state, 25.0, 0.0) == fb.NONE  # 50 x 0.5 is what is measured now
    assert correction(fb.NONE, s, state, 50.0, 0.0).factor == pytest.approx(0.5)


# --------------------------------------------------------------------------- pending effect checks


def check(at: float) -> Expectation:
    """A scale-up 2 -> 4 decided at ``at``, to be judged 20 s later."""
    return Expectation(at=at, due_at=at + 20.0, action="scale_up", current=2, target=4, pending=1000.0,
                       oldest_age=10.0, mu=50.0, startup=10.0)


def pending_check() -> ServiceState:
    state = with_history(aged_points([10.0] * 3))
    state.expectations.append(check(5.0))
    return state


def test_a_pending_effect_check_survives_a_restart_and_one_long_overdue_is_dropped() -> None:
    s = svc()
    doc = saved(s, pending_check())  # saved at 10.0, the check due 15 s later
    restored = back(doc, s, down=5.0, mono=500.0)
    [e] = restored.saved.state.expectations
    assert (e.at, e.due_at) == (pytest.approx(490.0), pytest.approx(510.0))
    assert dataclasses.replace(e, at=5.0, due_at=25.0) == pending_check().expectations[0]
    assert "1 pending effect check(s)" in restored.kept

    # due 15 s after the save; judged at most its 20 s horizon late: 35 s down is the last
    assert back(doc, s, down=35.0).saved.state.expectations
    late = back(doc, s, down=36.0)
    assert not late.saved.state.expectations
    assert "1 pending effect check(s): due longer ago than their horizon" in late.discarded


def test_another_executor_drops_the_verdicts_and_the_checks_and_keeps_the_rest() -> None:
    s = svc()
    state, _ = capped_climb()
    state.expectations.append(check(state.history[-1][0] - 5.0))
    state.last_up_at = state.history[-1][0]
    doc = saved(s, state)
    other = dataclasses.replace(ident(s), executor="compose:other/project/worker")
    restored = back(doc, s, down=5.0, identity=other)
    text = " | ".join(restored.discarded)
    assert "3 scale-up verdict(s): the executor changed (another deployment)" in text
    assert "1 pending effect check(s): the executor changed (another deployment)" in text
    assert restored.saved.state.recalled is None and not restored.saved.state.expectations


# --------------------------------------------------------------------------- hostile pieces


def hostile(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    at: Any = doc
    for key in path[:-1]:
        at = at[int(key)] if isinstance(at, list) else at[key]
    if isinstance(at, list):
        at[int(path[-1])] = value
    else:
        at[path[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "discarded"), [
    (("memory",), "garbage", "the policy's memory: unusable (not an object)"),
    (("memory", "verdicts", "judged"), 5, "scale-up verdicts: unusable ("),
    (("memory", "verdicts", "judged", "0", "seen_at"), 1e12, "scale-up verdicts: unusable (1000000000000.0 is"),
    (("memory", "verdicts", "judged", "0", "ready_before"), -4, "scale-up verdicts: unusable (-4 -> "),
    (("memory", "verdicts", "judged", "0", "effective"), "yes", "scale-up verdicts: unusable (effective: 'yes' is not true or false)"),
    (("memory", "verdicts", "judged", "1", "rate_before"), float("nan"), "scale-up verdicts: unusable (rate_before: nan is not a finite number)"),
    (("memory", "correction", "factor"), 7.0, "closed-loop correction: unusable (factor 7.0 of mu 50.0 is not a correction)"),
    (("memory", "correction", "factor"), 0.01, "closed-loop correction: unusable (factor 0.01 is below the loop's floor 0.25)"),
    (("memory", "correction", "mu"), "fast", "closed-loop correction: unusable (mu: 'fast' is not a finite number)"),
    (("memory", "correction", "at"), None, "closed-loop correction: unusable (None is not a time)"),
    (("memory", "expectations", "0", "due_at"), 1e300, "pending effect checks: unusable (1e+300 is"),
    (("memory", "expectations", "0", "target"), 2.5, "pending effect checks: unusable (target: 2.5 is not a whole number)"),
    (("memory", "expectations", "0", "action"), "x" * 500, "pending effect checks: unusable (action: "),
    (("memory", "expectations"), [{"at": WALL}], "pending effect checks: unusable ('due_at' is missing)"),
])
def test_a_hostile_piece_of_the_memory_costs_that_piece_never_the_restore(
    path: tuple[str, ...], value: Any, discarded: str
) -> None:
    s = svc()
    state, _ = capped_climb()
    state.expectations.append(check(state.history[-1][0] - 5.0))
    state.last_up_at = state.history[-1][0]
    doc = saved(s, state)
    doc["memory"]["correction"] = saved(s, slowed())["memory"]["correction"]
    restored = back(hostile(doc, path, value), s, down=5.0)
    assert any(line.startswith(discarded) for line in restored.discarded), restored.discarded
    assert len(restored.discarded) == 1  # that piece only
    assert any(k.startswith("last scale-up") for k in restored.kept)  # the rest of the file is kept
    if path[1:2] != ("verdicts",) and path != ("memory",):
        assert restored.saved.state.recalled is not None and restored.saved.state.recalled.verdicts


def test_a_state_file_without_the_memory_restores_as_before() -> None:
    s = svc()
    state, _ = capped_climb()
    doc = saved(s, state)
    del doc["memory"]
    restored = back(doc, s, down=5.0)
    assert restored.discarded == [] and restored.saved.state.recalled is None



# --------------------------------------------------------------------------- a real daemon, restarted

CAPPED = """
state_dir: state
services:
  - name: capped
    executor: fake
    queue: {kind: fake, timeout: 1s, metrics: [queue.backlog, queue.pending, queue.ack_pending, queue.rate_in, queue.rate_out]}
    policy: docktor
    check_interval: 5s
    startup_delay: 0s
    target_wait: 30s
    min_replicas: 1
    max_replicas: 40
    scale_up_by: 2
    cooldown_up: 0s
"""


async def test_a_restarted_daemon_still_holds_at_the_throughput_cap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon (``Supervisor``, as ``daemon start --foreground`` runs it, its decision log and
    state file on disk), its queue and fleet the in-memory fakes of ``docktor.tools.testing``: the
    queue a stand-in for a fault no local peer produces on demand, a downstream limit of 500
    messages/s (10 replicas' worth) whatever the count. The first daemon climbs from 10 by 2 until
    two scale-ups added nothing, and holds; stopped, then started again 30 s later, the new
    daemon's first decision, with no history of its own, holds too and says why."""
    fleet = FakeFleet("capped", replicas=10)

    def reading(_: int) -> dict[str, float]:
        running = fleet.running
        return {"queue.backlog": 2_000.0 + running, "queue.pending": 2_000.0, "queue.ack_pending": 20.0,
                "queue.rate_in": 1500.0, "queue.rate_out": min(50.0 * running, 500.0)}

    FakeQueue("capped", reading)
    path = tmp_path / "docktor.yaml"
    path.write_text(CAPPED)
    clock = FakeClock(100.0)
    with registry.installed(FakeSource, FakeExecutor):
        first = Supervisor(load_config(path), state="write", wall=clock.wall, mono=clock)
        await first.open()
        try:
            before = []
            for _ in range(8):
                before.append(await first.loops["capped"].tick())
                clock.advance(5.0)
        finally:
            await first.close()
        assert [r.target_replicas for r in before][:3] == [12, 14, 16]  # what the queue asked for, by 2
        held = before[-1]
        assert held.decision == "hold" and held.target_replicas == 16 and "Holding at 16" in held.reason
        assert fleet.running == 16  # the fleet outlives the daemon, as containers do

        clock.advance(30.0)  # down for half a minute
        caplog.set_level(logging.INFO, "docktor")
        again = Supervisor(load_config(path), state="write", wall=clock.wall, mono=clock)
        await again.open()
        try:
            await again.loops["capped"].tick()
        finally:
            await again.close()

    # the decision log, as `docktor explain` reads it: the first decision after the restart
    lines = [json.loads(line) for line in (tmp_path / "state" / "decisions.jsonl").read_text().splitlines()]
    decisions = [d for d in lines if d.get("service") == "capped" and "reason" in d]
    first_after = decisions[len(before)]
    assert first_after["ts"] == rfc3339(clock.wall())
    assert first_after["decision"] == "hold" and first_after["current_replicas"] == 16
    assert "2 scale-ups in the last" in first_after["reason"] and "added no throughput" in first_after["reason"]
    assert first_after["reason"].endswith("Holding at 16")
    assert first_after["observations"]["scaling.ineffective"] == 1.0
    assert fleet.scales[-1] == 16  # nothing asked of the fleet after the restart
    assert any("capped: state restored" in m and "scale-up verdict(s), the last 2 added no throughput" in m
               for m in caplog.messages), caplog.messages
