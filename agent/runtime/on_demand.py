"""Decisions asked for from outside the schedule, each answer bounded (``docktor keda``).

KEDA asks for a service's metric whenever the HPA syncs, not when Docktor ticks. The answer is
a decision the service's own :class:`~docktor.agent.runtime.service_loop.ServiceLoop` made: its
last one while that is younger than the service's ``check_interval`` (the loop ticks that
often), else the one the loop makes now (:meth:`ServiceLoop.decision_since`: the tick in
progress, or one tick at once). A question never waits past its bound: when the tick is slow (a
source that does not answer), the last decision is the answer and :attr:`Answer.note` says why.
The tick itself is never cut short by a question that gave up: it ends, acts and records as any
tick, and the next question finds it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from docktor.agent.runtime.decision_log import DecisionRecord

if TYPE_CHECKING:
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")


@dataclass(frozen=True)
class Answer:
    """The decision an answer is made from (None: the service has made none yet)."""

    record: DecisionRecord | None
    #: empty when the decision is current; else why an older one answers
    note: str = ""

    @property
    def current(self) -> bool:
        return self.record is not None and not self.note


class OnDemand:
    """Every service's current decision, for questions asked between its ticks."""

    def __init__(self, daemon: Supervisor) -> None:
        self.daemon = daemon
        #: the tick a question started, per service: later questions wait for the same one
        self._asked: dict[str, asyncio.Task[DecisionRecord]] = {}

    async def decision(self, service: str, within: float) -> Answer:
        """``service``'s current decision, within ``within`` seconds. ``KeyError``: no such service."""
        loop = self.daemon.loops[service]
        now = self.daemon.mono()
        if loop.last_record is not None and now - loop.last_mono < loop.svc.check_interval:
            return Answer(loop.last_record)
        task = self._asked.get(service)
        if task is None or task.done():
            task = asyncio.ensure_future(loop.decision_since(now))
            task.add_done_callback(_said)
            self._asked[service] = task
        try:
            return Answer(await asyncio.wait_for(asyncio.shield(task), max(0.0, within)))
        except TimeoutError:
            last = loop.last_record
            if last is None:
                return Answer(None, f"no decision within {within:g} s, and none made before")
            return Answer(last, f"no decision within {within:g} s: answered from the one of {last.ts}")


def _said(task: asyncio.Task[DecisionRecord]) -> None:
    """A tick nobody waited for any more still says how it failed (its loop's own ticks log theirs)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a tick asked for between ticks failed: %s", task.exception())
