"""The policy's memory in the state file: verdicts, the closed loop's correction, pending effect checks.

Three things a decision remembers only through ``state.history`` (which a restart does not
bring back) or ``state.expectations``; without them a restarted daemon climbs past a throughput
cap again, sizes a slowed-down fleet with a throughput it no longer has, and never judges the
actions it took just before. The state file's ``memory`` piece keeps them (docs/operations.md,
"Restarts"), each with the rules :mod:`.persist` applies to the others (times as wall-clock
instants, turned back into this daemon's monotonic clock; a piece that does not validate is
dropped with one line saying why):

* ``verdicts`` (:mod:`docktor.agent.core.saturation`): the judged scale-ups of the last
  ``MEMORY_S`` (the newest ``MAX_VERDICTS``) and the latest scale-up seen; older ones are
  forgotten as they are without a restart. Kept while the executor and the primary source are
  the same (they judged these replicas' output, as that source counts it).
* ``correction`` (:mod:`docktor.agent.core.feedback`): the factor, the throughput it corrected
  and when. Kept for ``policy: docktor`` with ``closed_loop`` on, the same executor and primary
  source, while at most ``INTERVALS`` check intervals old (the loop's own look-back); it fades as
  the loop's own does (:mod:`docktor.agent.core.recalled_loop`).
* ``expectations`` (:mod:`docktor.agent.core.effect`): the executed actions not yet judged. Kept
  with the same executor while their check time is not further past than the horizon they were
  given (``due_at - at``): judged later than that, a record would cover more time nobody watched
  than time the daemon did.

The verdicts and the correction saved are the ones the last decision used
(``state.carried``: :mod:`docktor.agent.core.carried`), not judged again from the history at
each save; only a save before any decision read them works them out from the history.

A file without the piece (written before it existed) restores as before; the state file's
version does not change, since an older daemon ignores the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import recalled
from docktor.agent.core.carried import Carried, Sized
from docktor.agent.core.effect import Expectation
from docktor.agent.core.recalled import Recalled, SavedCorrection
from docktor.agent.core.saturation import MEMORY_S, Verdict, assess
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.identity import Identity
from docktor.agent.runtime.saved_values import CLOCK_SLACK_S, instant, take_apart

if TYPE_CHECKING:
    from docktor.agent.runtime.persist import Restored

#: verdicts kept in the file: the hold reads the trailing run, a few more end it
MAX_VERDICTS = 20
#: a saved check time at most this far ahead of its action (a start-up delay of a day is not one)
MAX_HORIZON_S = 86400.0
#: pending checks kept in the file (a daemon acts at most once a tick; these are hours of actions)
MAX_EXPECTATIONS = 50


# --------------------------------------------------------------------------- saving


def dump(svc: ServiceConfig, state: ServiceState, *, wall: float, mono: float) -> dict[str, Any] | None:
    """The ``memory`` piece of ``state``, times on the wall clock (None: nothing to keep)."""
    def at(t: float) -> float:
        return round(wall - (mono - t), 3)

    points = list(state.history)
    carried = state.carried or Carried()
    out: dict[str, Any] = {}
    sat = carried.saturation  # what the last decisions read (core/carried.py): not judged again
    if sat is None and ((points and any("queue.rate_out" in o for _, o in points)) or state.recalled is not None):
        # no decision read verdicts yet (saved before the first tick): from the history
        sat = recalled.saturation(assess(svc, points), state, mono)
    if sat is not None:
        verdicts = [v for v in sat.verdicts if v.seen_at >= mono - MEMORY_S][-MAX_VERDICTS:]
        if verdicts or sat.last_up_at is not None:
            out["verdicts"] = {
                "last_up_at": None if sat.last_up_at is None else at(sat.last_up_at),
                "judged": [_row(v, at) for v in verdicts],
            }
    correction = _correction(svc, state, points, carried.sized)
    if correction is not None:
        out["correction"] = _row(correction, at)
    if state.expectations:
        out["expectations"] = [_row(e, at) for e in state.expectations[-MAX_EXPECTATIONS:]]
    return out or None


def _correction(svc: ServiceConfig, state: ServiceState, points: list[Any], sized: Sized | None) -> SavedCorrection | None:
    """The closed loop's correction as the last tick found it (with a saved one still stronger)."""
    if svc.policy != "docktor" or not svc.closed_loop:
        return None
    if sized is not None:  # what the last decision sized with (core/carried.py)
        if sized.mu is None or not sized.mu > 0 or not sized.factor < 1:
            return None
        return SavedCorrection(sized.factor, sized.mu, sized.at, sized.observed_age, sized.predicted_age)
    if not points:
        return None
    # no decision sized yet (saved before the first full reading): from the history
    # imported here: numpy, which only the sizing policy (which loaded it already) needs
    from docktor.agent.core.feedback import INTERVALS, correct
    from docktor.agent.core.recalled_loop import correction
    from docktor.agent.core.sizing import estimate_mu

    recent = points[-INTERVALS - 1:]
    if state.recalled is None and not any("queue.oldest_age" in o for _, o in recent):
        return None  # no age read lately: the loop finds nothing, and there is nothing to carry on

    mu, _ = estimate_mu(svc, points)
    if mu is None or not mu > 0:
        return None
    now = points[-1][0]
    c = correction(correct(svc, points, mu), svc, state, mu, now)
    if not c.factor < 1:
        return None
    return SavedCorrection(c.factor, mu, now, c.observed_age, c.predicted_age)


def _row(obj: Any, at: Any) -> dict[str, Any]:
    """A frozen dataclass as a JSON object, its instants (``*_at`` fields) on the wall clock."""
    row: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        row[f.name] = at(value) if _instant(f.name) and value is not None else value
    return row


# --------------------------------------------------------------------------- restoring


def load(doc: Mapping[str, Any], svc: ServiceConfig, was: Identity, identity: Identity, out: Restored, *,
         wall: float, mono: float) -> None:
    """Put the ``memory`` piece of ``doc`` back into ``out.saved.state``: each part kept, or
    dropped with a line in ``out.discarded`` saying why; never raises for what the file holds."""
    memory = doc.get("memory")
    if memory is None:
        return
    if not isinstance(memory, Mapping):
        out.discarded.append("the policy's memory: unusable (not an object)")
        return
    state = out.saved.state
    primary = next((spec.name for spec in svc.sources if spec.primary), "")
    replicas_why = was.executor_changed(identity) or (was.source_changed(primary, identity) if primary else None)

    def to_mono(value: Any, *, ahead: float = CLOCK_SLACK_S) -> float:
        return mono + (instant(value, wall, ahead=ahead) - wall)

    verdicts: tuple[Verdict, ...] = ()
    last_up_at: float | None = None
    correction: SavedCorrection | None = None

    def verdicts_part() -> None:
        nonlocal verdicts, last_up_at
        v = memory.get("verdicts")
        if v is None:
            return
        judged = [_typed(Verdict, row, to_mono) for row in list(v["judged"])[-MAX_VERDICTS:]]
        up = None if v.get("last_up_at") is None else to_mono(v["last_up_at"])
        for x in judged:
            if not (1 <= x.ready_before <= x.ready_after and x.seen_at <= x.judged_at and x.rate_before >= 0):
                raise ValueError(f"{x.ready_before} -> {x.ready_after} replicas judged {x.judged_at - x.seen_at:.3g} s "
                                 f"after it was seen is not a scale-up")
        fresh = [x for x in judged if x.seen_at >= mono - MEMORY_S]
        up = up if up is not None and up >= mono - MEMORY_S else None
        if not fresh and up is None:
            if judged:
                out.discarded.append(f"{len(judged)} scale-up verdict(s): older than {MEMORY_S:.0f} s")
            return
        if replicas_why is not None:
            out.discarded.append(f"{len(fresh)} scale-up verdict(s): {replicas_why}")
            return
        verdicts, last_up_at = tuple(sorted(fresh, key=lambda x: x.judged_at)), up
        streak = 0
        while streak < len(verdicts) and not verdicts[-1 - streak].effective:
            streak += 1
        tail = f", the last {streak} added no throughput" if streak else ""
        out.kept.append(f"{len(verdicts)} scale-up verdict(s){tail}")

    take_apart(out.discarded, "scale-up verdicts", verdicts_part)

    def correction_part() -> None:
        nonlocal correction
        c = memory.get("correction")
        if c is None:
            return
        saved = _typed(SavedCorrection, c, to_mono)
        if not (0 < saved.factor < 1 and saved.mu > 0):
            raise ValueError(f"factor {saved.factor!r} of mu {saved.mu!r} is not a correction")
        why = replicas_why
        if why is None and (svc.policy != "docktor" or not svc.closed_loop):
            why = "the closed loop is off (policy: docktor, closed_loop: true)"
        if why is not None:
            out.discarded.append(f"closed-loop correction: {why}")
            return
        # imported here: numpy, which a service of another policy never loads
        from docktor.agent.core.feedback import FLOOR
        from docktor.agent.core.recalled_loop import max_age_s

        if saved.factor < FLOOR - 1e-9:
            raise ValueError(f"factor {saved.factor!r} is below the loop's floor {FLOOR}")
        if mono - saved.at > max_age_s(svc):
            out.discarded.append(f"closed-loop correction: {mono - saved.at:.0f} s old (kept up to {max_age_s(svc):.0f} s)")
            return
        correction = saved
        out.kept.append(f"closed-loop correction (x{saved.factor:.3g} of {saved.mu:.4g}/s per replica, "
                        f"{mono - saved.at:.0f} s old)")

    take_apart(out.discarded, "closed-loop correction", correction_part)

    def expectations_part() -> None:
        rows = memory.get("expectations")
        if rows is None:
            return
        found = [_typed(Expectation, row, to_mono, ahead=MAX_HORIZON_S) for row in list(rows)[-MAX_EXPECTATIONS:]]
        for e in found:
            if not (e.at <= mono + CLOCK_SLACK_S and e.at <= e.due_at <= e.at + MAX_HORIZON_S and e.current >= 0 and e.target >= 0):
                raise ValueError(f"{e.action} {e.current} -> {e.target} due {e.due_at - e.at:.3g} s after it is not an action")
        if replicas_why is not None and found:
            out.discarded.append(f"{len(found)} pending effect check(s): {replicas_why}")
            return
        kept = [e for e in found if mono - e.due_at <= e.due_at - e.at]
        if len(kept) < len(found):
            out.discarded.append(f"{len(found) - len(kept)} pending effect check(s): due longer ago than their horizon")
        if kept:
            state.expectations[:] = kept
            out.kept.append(f"{len(kept)} pending effect check(s)")

    take_apart(out.discarded, "pending effect checks", expectations_part)
    if verdicts or last_up_at is not None or correction is not None:
        state.recalled = Recalled(verdicts, last_up_at, correction)


def _instant(name: str) -> bool:
    """The fields that are instants: ``at``, ``seen_at``, ``due_at`` ..."""
    return name == "at" or name.endswith("_at")


def _typed(cls: Any, row: Any, to_mono: Any, *, ahead: float = CLOCK_SLACK_S) -> Any:
    """``cls`` from a saved row: each field of its type (``float``, ``int``, ``bool``, ``str``, or
    ``None`` where it may be), ``*_at`` fields instants; ValueError/KeyError naming the field."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{str(row)[:40]!r} is not an object")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in row:
            if f.default is not dataclasses.MISSING:
                continue
            raise KeyError(f.name)
        value, kind = row[f.name], str(f.type)
        if value is None and "None" in kind:
            values[f.name] = None
        elif _instant(f.name):
            values[f.name] = to_mono(value, ahead=ahead) if f.name == "due_at" else to_mono(value)
        elif kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError(f"{f.name}: {value!r} is not true or false")
            values[f.name] = value
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name}: {value!r} is not a whole number")
            values[f.name] = value
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{f.name}: {value!r} is not a finite number")
            values[f.name] = float(value)
        elif kind.startswith("str"):
            if not isinstance(value, str) or len(value) > 40:
                raise ValueError(f"{f.name}: {str(value)[:40]!r} is not a name")
            values[f.name] = value
        else:
            raise ValueError(f"{f.name}: cannot read a {kind}")
    return cls(**values)
