"""A service's live wait-SLO attainment, for its decision records (the ``slo`` field), ``daemon
status``, ``explain`` and ``/metrics``: the estimator (:mod:`docktor.agent.core.attainment`) fed
with each tick's readings, its window kept in the service's state (and so in its state file).

Only a ``docktor``-policy service has a wait target (``target_wait``); the others get no ``slo``.
A source that cannot tell the age of its oldest message gives attainment ``null`` with the
reason, never a number made up from the backlog.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.attainment import NO_AGE_SOURCE, WINDOWS, AttainmentWindow, max_gap_for
from docktor.agent.core.state import ServiceState
from docktor.tools.sdk import MetricInfo


def why_none(svc: ServiceConfig, infos: Mapping[str, Mapping[str, MetricInfo]]) -> str | None:
    """Why the service's primary source can never give attainment (None: it can). ``infos``:
    per source name, what it provides (``ServiceLoop.metric_infos``)."""
    primary = next((spec.name for spec in svc.sources if spec.primary), None)
    provided = infos.get(primary, {}) if primary is not None else {}
    if "queue.oldest_age" not in provided:
        return NO_AGE_SOURCE
    if "queue.rate_out" not in provided:
        return "no queue.rate_out from this source"
    return None


def absent(svc: ServiceConfig, why: str) -> dict[str, Any]:
    return {"target_wait_s": svc.target_wait, **{f"attainment_{name}": None for name, _ in WINDOWS}, "why": why}


def observe(state: ServiceState, svc: ServiceConfig, why: str | None, now: float,
            observations: Mapping[str, float]) -> dict[str, Any] | None:
    """This tick's readings into the service's window; the record's ``slo`` (None: no wait target)."""
    if svc.policy != "docktor":
        return None
    if why is not None:
        return absent(svc, why)
    window = state.attainment
    if window is None or window.target_wait != svc.target_wait:
        window = state.attainment = AttainmentWindow(svc.target_wait, max_gap=max_gap_for(svc.check_interval))
    window.observe(now, observations)
    return window.summary(now)
