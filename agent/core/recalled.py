"""The policy's memory a previous daemon left: verdicts and a closed-loop correction from before a restart.

The closed loop (:mod:`.feedback`) and the "scaling is not helping" verdicts (:mod:`.saturation`)
are read from ``state.history``, which a restart does not bring back. What they had found is
saved instead (:mod:`docktor.agent.runtime.policy_memory`) and handed back here as a
:class:`Recalled` on ``state.recalled``; two functions add it to what the fresh history
says, so the first decision after a restart holds at a throughput cap, or sizes with the
corrected throughput, as the last one before it did:

- :func:`saturation`: the saved verdicts (and the latest scale-up seen) older than the history
  join the ones the history gives; the hold, its probe schedule (the time since the last verdict,
  the time spent down included) and ``MEMORY_S`` then apply to them as to any other.
- :func:`docktor.agent.core.recalled_loop.correction` (apart: it needs numpy, a rules-only
  daemon never loads it): the saved correction, faded by ``exp(-age / (DECAY_CHECKS x
  check_interval))`` like any the loop finds, is a per-replica throughput (``mu x factor`` then);
  against the ``mu`` measured now it is a factor again, so a measurement that has caught up
  (after the restart ``mu`` is measured afresh, on the slower workers) leaves nothing of it.
  The lower of it and the history's own correction is used.

Pure, like the rest of the decision: nothing here is written back into the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from docktor.agent.core.saturation import MEMORY_S, Saturation, Verdict

if TYPE_CHECKING:
    from docktor.agent.core.state import ServiceState


@dataclass(frozen=True)
class SavedCorrection:
    """A closed-loop correction found before a restart, times in this daemon's monotonic clock."""

    factor: float  # what it multiplied mu by at ``at``
    mu: float  # the per-replica throughput measured then (uncorrected), messages/s
    at: float
    observed_age: float = 0.0
    predicted_age: float = 0.0


@dataclass(frozen=True)
class Recalled:
    """What the state file brought back of the policy's memory (times in this daemon's clock)."""

    verdicts: tuple[Verdict, ...] = ()
    #: the latest scale-up seen (judged or not)
    last_up_at: float | None = None
    correction: SavedCorrection | None = None


def covered_from(state: ServiceState) -> float:
    """From when the history itself says what happened (what is older comes from the file)."""
    return state.history[0][0] if state.history else math.inf


def saturation(sat: Saturation, state: ServiceState, now: float) -> Saturation:
    """``sat`` (:func:`.saturation.assess` of the history) with the verdicts saved before a restart."""
    r = state.recalled
    if r is None:
        return sat
    since = covered_from(state)
    old = [v for v in r.verdicts if now - MEMORY_S <= v.seen_at < since]
    up = r.last_up_at if r.last_up_at is not None and now - MEMORY_S <= r.last_up_at < since else None
    if not old and up is None:
        return sat
    verdicts = tuple(sorted((*old, *sat.verdicts), key=lambda v: v.judged_at))
    latest = max((t for t in (up, sat.last_up_at) if t is not None), default=None)
    return replace(sat, verdicts=verdicts, last_up_at=latest)
