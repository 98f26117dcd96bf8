"""Decisions asked for between ticks (``docktor keda``'s questions), on the real supervisor with
in-memory fakes: a decision younger than the check interval answers as it is; an older one is
replaced by the loop's own tick, made once for every question waiting on it (or the tick already
in progress); a question never waits past its bound, and the tick it started still ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from docktor.agent.config.load import load_config
from docktor.agent.runtime.on_demand import OnDemand
from docktor.agent.runtime.supervisor import Supervisor
from docktor.tools import registry
from docktor.tools.testing import FakeExecutor, FakeFleet, FakeQueue, FakeSource
from tests.support.clocks import FakeClock
from tests.support.waiting import eventually

CONFIG = """
state_dir: state
services:
  - name: asked
    executor: fake
    queue: {kind: fake, timeout: 1.5s}
    check_interval: 10s
    policy: target
    target_per_replica: 10
    min_replicas: 1
    max_replicas: 8
"""


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, FakeQueue, FakeClock]]:
    (tmp_path / "docktor.yaml").write_text(CONFIG)
    queue = FakeQueue("asked", {"queue.backlog": 30.0})
    FakeFleet("asked", replicas=2)
    clock = FakeClock()
    with registry.installed(FakeSource, FakeExecutor):
        daemon = Supervisor(load_config(tmp_path / "docktor.yaml"), mono=clock, wall=clock.wall)
        await daemon.open()
        try:
            yield daemon, queue, clock
        finally:
            await daemon.close()


async def test_a_young_decision_answers_as_it_is_and_an_old_one_is_replaced_by_one_tick(opened: tuple[Supervisor, FakeQueue, FakeClock]) -> None:
    daemon, queue, clock = opened
    loop, asked = daemon.loops["asked"], OnDemand(daemon)
    first = await asked.decision("asked", 5)  # none yet: the loop's tick now
    assert first.current and loop.ticks == 1 and first.record is loop.last_record
    clock.advance(9.9)  # younger than check_interval (10 s)
    again = await asked.decision("asked", 5)
    assert again.record is first.record and loop.ticks == 1
    clock.advance(0.2)
    queue.set({"queue.backlog": 70.0})
    answers = await asyncio.gather(*(asked.decision("asked", 5) for _ in range(3)))  # three questions, one tick
    assert loop.ticks == 2
    assert {id(a.record) for a in answers} == {id(loop.last_record)} and answers[0].record is not first.record
    assert answers[0].record is not None and answers[0].record.target_replicas == 7


async def test_a_tick_in_progress_answers_the_question(opened: tuple[Supervisor, FakeQueue, FakeClock]) -> None:
    daemon, queue, _ = opened
    loop = daemon.loops["asked"]
    queue.stall()  # the scheduled tick's read waits the source's 1.5 s timeout
    scheduled = asyncio.create_task(loop.tick())
    await eventually("the tick to hold the loop", loop.lock.locked)
    answer = await OnDemand(daemon).decision("asked", 5)
    assert answer.record is await scheduled and loop.ticks == 1  # no second copy of the tick


async def test_a_question_never_waits_past_its_bound_and_its_tick_still_ends(opened: tuple[Supervisor, FakeQueue, FakeClock]) -> None:
    daemon, queue, clock = opened
    loop, asked = daemon.loops["asked"], OnDemand(daemon)
    queue.stall()
    nothing = await asked.decision("asked", 0.2)
    assert nothing.record is None and nothing.note == "no decision within 0.2 s, and none made before"
    await eventually("the tick that question started to end", lambda: loop.ticks == 1)
    made = loop.last_record
    assert made is not None and made.errors == ["source: fake queue 'asked' timed out after 1.5s"]

    clock.advance(11)
    queue.stall()
    late = await asked.decision("asked", 0.2)
    assert late.record is made and late.note == f"no decision within 0.2 s: answered from the one of {made.ts}"
    await eventually("the next tick to end", lambda: loop.ticks == 2)
    with pytest.raises(KeyError):
        await asked.decision("nobody", 1)
