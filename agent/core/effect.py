"""Did the action work? Each executed scale action, a few checks later, gets an effectiveness record.

When a decision changes the count, :func:`expect` notes what it should do: the queue and its
oldest message's age then, the per-replica throughput the policy sized with (measured, with the
closed loop's correction, one restored after a restart included: :mod:`docktor.agent.core.carried`),
and the start-up delay. The
executor acted and it worked (:func:`docktor.agent.core.decide.remember` keeps the expectation
in ``state.expectations``); ``startup_delay + HORIZON_CHECKS x check_interval`` later, when the
added replicas have served a while, :func:`judge` compares:

- **drain**: the queue (``queue.pending``) then and now, against what the replicas should have
  done to the messages that really came (the mean ``queue.rate_in`` since: the load is not the
  action's to predict): the replicas there before served all along, those added from when they
  were ready, those removed not at all;
- **age**: ``queue.oldest_age`` now against the age a queue of the predicted length would have,
  at the rate messages came (``pending / rate_in``: the wait of the last message queued, a FIFO
  queue's head when arrivals are steady).

The record is a plain dict in the decision of the tick that judged it (``effects`` in the
decision log), which ``docktor explain`` prints. Pure, like the rest of the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.derived import Point, pending

if TYPE_CHECKING:
    from docktor.agent.core.carried import Sized

#: check intervals after the added replicas are ready before an action is judged
HORIZON_CHECKS = 2
#: drain short of the prediction by more than this share of the predicted service rate: "short"
SHORT_SHARE = 0.1



@dataclass(frozen=True)
class Expectation:
    """What an executed action should do, noted when it was decided."""

    at: float
    due_at: float
    action: str
    current: int
    target: int
    pending: float
    oldest_age: float | None
    #: per-replica throughput the policy would size with then (None: none measured)
    mu: float | None
    startup: float


def _pending(o: Mapping[str, float]) -> float | None:
    """:func:`.derived.pending`, never below 0 (fewer messages than replicas: none waiting)."""
    waiting = pending(o)
    return None if waiting is None else max(0.0, waiting)


def expect(svc: ServiceConfig, points: Sequence[Point], action: str, current: int, target: int,
           sized: Sized | None = None) -> Expectation | None:
    """The expectation of a change from ``current`` to ``target`` decided at ``points[-1]`` (None:
    no change, or no queue length to judge it by). ``sized``: what the docktor policy sized this
    decision with (:mod:`.carried`), the throughput predicted with; without it (another policy,
    a reading with a metric missing) the throughput is estimated here, as that policy would."""
    if target == current or not points:
        return None
    now, obs = points[-1]
    waiting = _pending(obs)
    if waiting is None:
        return None
    if sized is not None and sized.at == now:
        # a correction restored after a restart included: the record judges what the policy used
        mu = sized.corrected
    else:
        # imported here: the sizing module brings numpy, which a rules-only daemon never needs otherwise
        from docktor.agent.core.feedback import correct
        from docktor.agent.core.sizing import estimate_mu

        mu, _ = estimate_mu(svc, points)
        if mu is not None:
            mu *= correct(svc, points, mu).factor
    return Expectation(now, now + svc.startup_delay + HORIZON_CHECKS * svc.check_interval, action, current, target,
                       waiting, obs.get("queue.oldest_age"), mu, svc.startup_delay)


def judge(e: Expectation, points: Sequence[Point]) -> dict[str, Any]:
    """The effectiveness record of ``e``, from the points after it (the current one last)."""
    now, obs = points[-1]
    dt = now - e.at
    since = [o for t, o in points if t > e.at]
    rates = [o["queue.rate_in"] for o in since if "queue.rate_in" in o]
    arrivals = sum(rates) / len(rates) if rates else 0.0
    observed = _pending(obs)
    out: dict[str, Any] = {
        "action": e.action, "from": e.current, "to": e.target, "after_s": round(dt, 1),
        "pending_before": round(e.pending, 1), "pending_observed": None if observed is None else round(observed, 1),
        "age_before": None if e.oldest_age is None else round(e.oldest_age, 1),
        "age_observed": None if "queue.oldest_age" not in obs else round(obs["queue.oldest_age"], 1),
        "drain_observed": None if observed is None or dt <= 0 else round((e.pending - observed) / dt, 2),
        "pending_predicted": None, "drain_predicted": None, "age_predicted": None, "verdict": "unknown",
    }
    if e.mu is None or dt <= 0 or observed is None:
        return out
    kept, added = min(e.current, e.target), max(0, e.target - e.current)
    served = e.mu * (kept * dt + added * max(0.0, dt - e.startup))
    predicted = max(0.0, e.pending + arrivals * dt - served)
    drain = (e.pending - predicted) / dt
    out.update(
        pending_predicted=round(predicted, 1),
        drain_predicted=round(drain, 2),
        age_predicted=round(predicted / arrivals, 1) if arrivals > 0 else 0.0,
    )
    short = (e.pending - observed) / dt < drain - SHORT_SHARE * served / dt - 1.0 / dt
    out["verdict"] = "short" if short else "as_predicted"
    return out


def due(state_expectations: Sequence[Expectation], points: Sequence[Point]) -> tuple[dict[str, Any], ...]:
    """The records of the expectations due by ``points[-1]`` (the current tick)."""
    now = points[-1][0]
    return tuple(judge(e, [p for p in points if p[0] >= e.at]) for e in state_expectations if e.due_at <= now)


def text(rec: Mapping[str, Any]) -> str:
    """One line for ``docktor explain``."""
    head = f"{rec.get('action')} {rec.get('from')} -> {rec.get('to')}, {float(rec.get('after_s') or 0):.0f} s on"

    def n(key: str) -> str:
        v = rec.get(key)
        return "?" if v is None else f"{float(v):,.0f}"

    queue = f"queue {n('pending_before')} -> {n('pending_observed')}"
    if rec.get("pending_predicted") is not None:
        queue += f" (predicted {n('pending_predicted')})"
    drain = rec.get("drain_observed")
    if drain is not None:
        queue += f", net drain {float(drain):+.4g}/s"
        if rec.get("drain_predicted") is not None:
            queue += f" (predicted {float(rec['drain_predicted']):+.4g}/s)"
    age = ""
    if rec.get("age_observed") is not None:
        age = f"; oldest message {float(rec['age_observed']):.0f} s"
        if rec.get("age_predicted") is not None:
            age += f" (predicted ~{float(rec['age_predicted']):.0f} s)"
    verdict = {"as_predicted": "as predicted", "short": "short of the prediction: slower workers, or a downstream limit?",
               "unknown": "no throughput measured to predict with"}.get(str(rec.get("verdict")), str(rec.get("verdict")))
    return f"{head}: {queue}{age}: {verdict}"
