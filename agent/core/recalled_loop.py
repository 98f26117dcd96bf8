"""A closed-loop correction saved before a restart, applied as the loop applies its own (:mod:`.recalled`).

Apart from :mod:`.recalled` because the closed loop brings numpy, which only the sizing policy
loads.
"""

from __future__ import annotations

import math

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.feedback import DECAY_CHECKS, FLOOR, INTERVALS, Correction
from docktor.agent.core.recalled import SavedCorrection, covered_from
from docktor.agent.core.state import ServiceState


class SavedLoop(Correction):
    """A correction found before the restart: the reason says so."""

    def text(self, mu: float) -> str:
        return super().text(mu) + " (found before the restart)"


def max_age_s(svc: ServiceConfig) -> float:
    """A saved correction older than this is dropped: the loop looks back this far for the
    intervals it corrects from, so one it found earlier it would not find any more."""
    return INTERVALS * svc.check_interval


def faded(c: SavedCorrection, svc: ServiceConfig, now: float) -> float:
    """The saved factor at ``now``, faded toward 1 as the loop fades its own."""
    return 1.0 - (1.0 - c.factor) * math.exp(-max(0.0, now - c.at) / (DECAY_CHECKS * svc.check_interval))


def correction(loop: Correction, svc: ServiceConfig, state: ServiceState, mu: float, now: float) -> Correction:
    """``loop`` (:func:`.feedback.correct` of the history), or the saved correction when it is lower."""
    r = state.recalled
    c = None if r is None else r.correction
    if c is None or not svc.closed_loop or not mu > 0 or c.at >= covered_from(state) or now - c.at > max_age_s(svc):
        return loop
    factor = min(1.0, max(FLOOR, c.mu * faded(c, svc, now) / mu))
    if factor >= loop.factor:
        return loop
    return SavedLoop(factor, c.observed_age, c.predicted_age)
