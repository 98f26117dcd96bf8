"""What the decision functions remember about one service between ticks.

Decisions themselves are pure (:func:`docktor.agent.core.decide.step` never mutates state); the
loop and the simulator call :func:`docktor.agent.core.decide.remember` afterwards, so both run
exactly the same transition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docktor.agent.core.attainment import AttainmentWindow
from docktor.agent.core.derived import Point

if TYPE_CHECKING:
    from docktor.agent.core.carried import Carried
    from docktor.agent.core.effect import Expectation
    from docktor.agent.core.recalled import Recalled

#: enough history for an hour at 5 s ticks; older points are dropped
HISTORY_POINTS = 720


@dataclass
class ServiceState:
    last_up_at: float | None = None
    last_down_at: float | None = None
    #: (time, desired replicas) the policy recommended each tick, for scale-down stabilization
    recommendations: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    #: (time, observations) per tick, for policies that smooth or predict, and for the LLM
    history: deque[tuple[float, dict[str, float]]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    #: consecutive failed scale actions, and when a scale-up may be tried again
    failures: int = 0
    backoff_until: float | None = None
    #: per source name: failed reads in a row (0 after a good read), for ``on_missing``
    failed_reads: dict[str, int] = field(default_factory=dict)
    #: executed actions not yet judged for their effect (core/effect.py), oldest first
    expectations: list[Expectation] = field(default_factory=list)
    #: live wait-SLO attainment's window (a docktor-policy service whose source tells the age)
    attainment: AttainmentWindow | None = None
    #: what a previous daemon's verdicts and closed loop had found, from its state file (core/recalled.py)
    recalled: Recalled | None = None
    #: the verdicts, throughput and correction the last decisions used (core/carried.py)
    carried: Carried | None = None

    def note_reads(self, ok: Iterable[str], failed: Iterable[str]) -> None:
        """Count this tick's source reads: a failure extends its source's run, a success ends it."""
        for name in ok:
            self.failed_reads[name] = 0
        for name in failed:
            self.failed_reads[name] = self.failed_reads.get(name, 0) + 1

    def series(self, obs: Mapping[str, float], now: float) -> list[Point]:
        """The history before ``now`` and this tick's reading ``obs`` last: what the docktor
        policy, the closed loop, the not-helping verdicts and the effectiveness records read."""
        points: list[Point] = [(t, o) for t, o in self.history if t < now]
        points.append((now, obs))
        return points

    def last_action_at(self) -> float | None:
        times = [t for t in (self.last_up_at, self.last_down_at) if t is not None]
        return max(times) if times else None


#: exponential back-off after failed scale actions: 30 s, 60 s, 120 s ... capped at 10 minutes
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 600.0


def backoff_delay(failures: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** max(0, failures - 1))
