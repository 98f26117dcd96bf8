"""The daemon's side of the decision log: write-ahead, and what to do when the disk is full.

:class:`Recorder` wraps :class:`~docktor.agent.runtime.decision_log.DecisionLog` with the daemon's
rules (docs/architecture.md, "Record"):

* a decision that acts is written as an intent *before* the executor is called; if that write
  fails the executor is not called ("no unrecorded actions");
* an outcome that cannot be written waits in memory and is written first when the log takes
  lines again, so every executed action ends up in the log with its result;
* while the log cannot be written the daemon keeps deciding (in memory, for ``daemon status``),
  says so once on stderr, and the first record written afterwards names the gap.

:meth:`Recorder.health` is the log's state for ``daemon status`` (and a later ``/metrics``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, LogWriteError, OutcomeRecord
from docktor.agent.timestamps import rfc3339

log = logging.getLogger("docktor")

#: outcomes kept while the log is unwritable; beyond this the oldest intents read "outcome unknown"
MAX_WAITING_OUTCOMES = 1000
#: how often stderr is reminded that the log is still unwritable
REMIND_EVERY_S = 60.0


class Recorder:
    def __init__(self, decision_log: DecisionLog, *, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic):
        self.log = decision_log
        self.wall, self.mono = wall, mono
        self.error: str | None = None  # set while the log cannot be written
        self.since: float | None = None  # wall time of the first failed write
        self.unrecorded = 0  # decisions not written since then
        self.refused = 0  # scale actions not taken since then, because their intent could not be written
        self.failures_total = 0  # failed writes over the daemon's life (a counter for /metrics)
        self.refused_total = 0
        self.waiting: deque[OutcomeRecord] = deque(maxlen=MAX_WAITING_OUTCOMES)
        self._reminded_at = 0.0

    @property
    def writable(self) -> bool:
        return self.error is None

    def write(self, record: DecisionRecord) -> bool:
        """Write ``record`` (after any outcome still waiting). False: nothing of it was written."""
        if not self.writable:
            record = record.model_copy(update={"errors": [*record.errors, self._gap_note()]})
        try:
            self._flush_waiting()
            self.log.write(record)
        except LogWriteError as e:
            self._failed(e)
            self.unrecorded += 1
            return False
        self._recovered()
        return True

    def refuse(self) -> None:
        """Count a scale action not taken because its intent could not be written."""
        self.refused += 1
        self.refused_total += 1

    def write_outcome(self, outcome: OutcomeRecord) -> None:
        """The outcome of an action whose intent is in the log: now, or as soon as the log allows."""
        self.waiting.append(outcome)
        try:
            self._flush_waiting()
        except LogWriteError as e:
            self._failed(e)
            return
        self._recovered()

    def _flush_waiting(self) -> None:
        while self.waiting:
            self.log.write(self.waiting[0])
            self.waiting.popleft()

    def _failed(self, e: OSError) -> None:
        self.failures_total += 1
        text = e.strerror or str(e)
        now = self.mono()
        if self.error is None:
            self.error, self.since, self._reminded_at = text, self.wall(), now
            log.error(
                "decision log %s is not writable (%s): not scaling until it is; still deciding, in memory "
                "(see docktor daemon status)", self.log.path, text,
            )
        elif now - self._reminded_at >= REMIND_EVERY_S:
            self.error, self._reminded_at = text, now
            log.error("decision log still not writable (%s): %d decisions unrecorded, %d scale actions not taken",
                      text, self.unrecorded, self.refused)

    def _gap_note(self) -> str:
        since = rfc3339(self.since) if self.since is not None else "?"
        return (f"decision log: not writable from {since} ({self.error}): {self.unrecorded} decision(s) before this "
                f"one were not recorded, {self.refused} scale action(s) not taken")

    def _recovered(self) -> None:
        if self.error is None:
            return
        log.warning("decision log writable again: %d decision(s) were not recorded, %d scale action(s) not taken "
                    "while it was not (since %s)", self.unrecorded, self.refused,
                    rfc3339(self.since) if self.since else "?")
        self.error, self.since, self.unrecorded, self.refused = None, None, 0, 0

    def health(self) -> dict[str, Any]:
        """The log's state: for ``daemon status`` and a ``/metrics`` exporter."""
        return {
            "path": str(self.log.path),
            "writable": self.writable,
            "error": self.error,
            "since": rfc3339(self.since) if self.since is not None else None,
            "unrecorded": self.unrecorded,
            "refused_actions": self.refused,
            "waiting_outcomes": len(self.waiting),
            "write_failures_total": self.failures_total,
            "refused_actions_total": self.refused_total,
        }
