"""Each service's state, saved as it changes and restored when the daemon starts again.

A restart must not reset the guardrails: a daemon killed a second after a scale-up that comes
back and scales up again at once has broken ``cooldown_up`` as surely as one that never had it.
So, per service, ``state_dir/state/<service>.json`` holds what the decisions remember between
ticks (docs/operations.md, "Restarts"):

* the cooldown clocks (last scale-up, last scale-down) and the executor's back-off;
* the scale-down stabilization window's recommendations;
* per source, its rate baseline (:meth:`docktor.tools.sdk.Source.snapshot`) and its failed reads
  in a row (``on_missing``);
* the LLM circuit breaker; a pause (``docktor pause``);
* the live wait-SLO attainment's window, in minute spans (kept while the primary source and
  ``target_wait`` are unchanged);
* the policy's memory (:mod:`.policy_memory`): the "scaling is not helping" verdicts, the closed
  loop's correction, the executed actions whose effect is not judged yet.

Times are saved as wall-clock instants and turned back into the daemon's monotonic clock at
restore, so the time spent down counts: a cooldown of 120 s with 100 s spent down has 20 s left.

Each piece is kept only while what gives it meaning is unchanged (:class:`Identity`); a piece
that lost its meaning is discarded with a log line saying which and why. The file is replaced
atomically (temporary file, ``fsync``, ``rename``, ``fsync`` of the folder), private to the
user the daemon runs as; a failed write (a full disk) leaves the previous file whole, is
logged, and never stops a tick.

The file is written after the decision log, so a daemon killed between its intent line and its
state file (or while its executor acted) left a newer record in the log than in the file:
:func:`~docktor.agent.runtime.log_tail.read_log_tail` reads the log's tail back at start for
exactly that. The same tail gives
back the stabilization window's newest recommendations (each decision line carries its
``recommendation``), which is why the daemon need not rewrite the file every tick: only when
something a tick cannot rebuild changed (:meth:`SavedState.durable`), and otherwise every few
seconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.attainment import AttainmentWindow, max_gap_for
from docktor.agent.core.state import HISTORY_POINTS, ServiceState
from docktor.agent.runtime import policy_memory
from docktor.agent.runtime.identity import Identity
from docktor.agent.runtime.saved_values import MAX_AHEAD_S, count, instant, take_apart
from docktor.agent.timestamps import rfc3339
from docktor.tools.sdk import private_dir, read_private, write_atomic

log = logging.getLogger("docktor")

VERSION = 1
#: a source's baseline older than this many check intervals (and at least BASELINE_MIN_AGE_S) is
#: dropped: a rate averaged over a long outage would hide what the queue did meanwhile
BASELINE_MAX_INTERVALS = 5
BASELINE_MIN_AGE_S = 60.0


# --------------------------------------------------------------------------- what is saved


@dataclass
class Pause:
    """``docktor pause``: decisions go on and are logged, nothing is executed (KEDA's paused)."""

    since: float  # wall clock
    until: float | None  # wall clock; None: until resumed
    reason: str = ""

    def active(self, wall: float) -> bool:
        return self.until is None or wall < self.until

    def as_dict(self) -> dict[str, Any]:
        return {"since": rfc3339(self.since), "until": None if self.until is None else rfc3339(self.until), "reason": self.reason}

    def text(self) -> str:
        return "until resumed" if self.until is None else f"until {rfc3339(self.until)}"


@dataclass
class Breaker:
    """The LLM circuit breaker of one service, in the daemon's monotonic clock."""

    failures: int
    open_until: float | None
    last_error: str = ""


@dataclass
class SavedState:
    """Everything saved about one service, times in the daemon's monotonic clock."""

    identity: Identity
    state: ServiceState
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    breaker: Breaker | None = None
    pause: Pause | None = None

    def durable(self) -> tuple[Any, ...]:
        """What a restart must find exactly as it was, from the state file alone: the cooldown
        clocks, the back-off, failed reads, the breaker, a pause, the identity. The rest (the
        stabilization window, the rate baselines) changes every tick, and a restart rebuilds it:
        the window's newest part from the decision log, the rates over a slightly longer span."""
        s, b, p = self.state, self.breaker, self.pause
        return (
            self.identity, s.last_up_at, s.last_down_at, s.failures, s.backoff_until, tuple(sorted(s.failed_reads.items())),
            None if b is None else (b.failures, b.open_until, b.last_error),
            None if p is None else (p.since, p.until, p.reason),
        )


def capture(saved: SavedState, *, service: str, window: float, wall: float, mono: float,
            svc: ServiceConfig | None = None) -> dict[str, Any]:
    """``saved`` as the JSON document of the state file (with ``svc``: and the policy's memory,
    which takes the service's settings to read from the history)."""
    s = saved.state

    def at(t: float | None) -> float | None:
        return None if t is None else wall - (mono - t)

    recent = [[round(at(t) or 0.0, 3), n] for t, n in s.recommendations if t > mono - window]
    breaker = saved.breaker
    return {
        "version": VERSION,
        "service": service,
        "saved_at": wall,
        "saved": rfc3339(wall),
        "pid": os.getpid(),
        "identity": saved.identity.as_dict(),
        "last_up_at": at(s.last_up_at),
        "last_down_at": at(s.last_down_at),
        "failures": s.failures,
        "backoff_until": at(s.backoff_until),
        "recommendations": recent,
        "failed_reads": dict(s.failed_reads),
        "sources": saved.sources,
        "breaker": None if breaker is None or breaker.failures == 0 else {
            "failures": breaker.failures, "open_until": at(breaker.open_until), "last_error": breaker.last_error,
        },
        "pause": None if saved.pause is None else {"since": saved.pause.since, "until": saved.pause.until, "reason": saved.pause.reason},
        "attainment": None if s.attainment is None or not s.attainment.spans else s.attainment.dump(to_wall=wall - mono),
        "memory": None if svc is None else policy_memory.dump(svc, s, wall=wall, mono=mono),
    }


@dataclass
class Restored:
    """What :func:`restore` made of a state file: the pieces kept, and a line per piece dropped."""

    saved: SavedState
    saved_at: float | None = None  # wall clock of the file; None: there was none
    kept: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    #: the executor's clocks are from the deployment now configured (log records may be applied)
    same_executor: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"saved_at": None if self.saved_at is None else rfc3339(self.saved_at),
                "kept": list(self.kept), "discarded": list(self.discarded)}


def restore(
    doc: Mapping[str, Any] | None,
    identity: Identity,
    svc: ServiceConfig,
    *,
    wall: float,
    mono: float,
    logged: Iterable[tuple[float, int]] = (),
) -> Restored:
    """The state a previous daemon saved for ``svc``, as far as it still means something.

    ``logged``: the service's ``(wall clock, recommendation)`` pairs from the decision log's tail
    (:func:`read_log_tail`); those newer than the file complete its stabilization window, which
    the daemon writes every few seconds only, on the same condition as the file's own.

    Any JSON object is taken apart piece by piece (the pause, the clocks, the window, each
    source's baseline, the breaker, the policy's memory): a piece that does not parse, or holds a number it cannot
    mean (a time in the year 33658, a count below 0), is discarded with a line saying which and
    why, and the others are kept. Only a document of another version (or not an object at all)
    is set aside whole (``ValueError``).
    """
    fresh = SavedState(identity, ServiceState())
    if doc is None:
        return Restored(fresh)
    if not isinstance(doc, Mapping) or doc.get("version") != VERSION:
        raise ValueError(f"unknown state file version {doc.get('version') if isinstance(doc, Mapping) else None!r}")
    out = Restored(fresh)
    state = fresh.state

    def piece(what: str, fn: Callable[[], None]) -> None:
        take_apart(out.discarded, what, fn)

    def saved_at() -> None:
        out.saved_at = instant(doc["saved_at"], wall)

    piece("the time it was saved", saved_at)
    old: Identity | None = None

    def identity_piece() -> None:
        nonlocal old
        old = Identity.from_dict(doc["identity"])

    piece("what it was saved for", identity_piece)
    if old is None:  # no piece can be matched to today's config
        out.discarded.append("every other piece: nothing says what it was saved for")
        return out
    was: Identity = old

    def past(t: Any) -> float | None:
        """An instant that has happened, in the monotonic clock."""
        return None if t is None else mono - max(0.0, wall - instant(t, wall))

    def future(t: Any) -> float | None:
        """A deadline, in the monotonic clock (None once passed)."""
        if t is None:
            return None
        left = instant(t, wall, ahead=MAX_AHEAD_S) - wall
        return mono + left if left > 0 else None

    def pause_piece() -> None:
        p = doc.get("pause")
        if p is None:
            return
        until = None if p.get("until") is None else instant(p["until"], wall, ahead=MAX_AHEAD_S)
        pause = Pause(instant(p["since"], wall), until, str(p.get("reason") or "")[:200])
        if pause.active(wall):
            fresh.pause = pause
            out.kept.append(f"paused {pause.text()}")

    piece("the pause", pause_piece)

    def clocks_piece() -> None:
        why = was.executor_changed(identity)
        if why is not None:
            out.same_executor = False
            out.discarded.append(f"cooldown clocks and back-off: {why}")
            return
        up, down = past(doc.get("last_up_at")), past(doc.get("last_down_at"))
        failures = count(doc.get("failures") or 0)
        backoff = future(doc.get("backoff_until"))
        state.last_up_at, state.last_down_at, state.failures, state.backoff_until = up, down, failures, backoff
        clocks = [f"last scale-{d} {mono - t:.0f} s ago" for d, t in (("up", up), ("down", down)) if t is not None]
        if clocks:
            out.kept.append(", ".join(clocks))
        if backoff is not None:
            out.kept.append(f"back-off after {failures} failed scale(s), {backoff - mono:.0f} s left")

    piece("cooldown clocks and back-off", clocks_piece)
    window_why = was.window_changed(identity)

    def in_window(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[float, int]]:
        recs = [(past(t), count(n)) for t, n in pairs]
        return [(t, n) for t, n in recs if t is not None and t > mono - svc.scale_down_stabilization]

    def window_piece() -> None:
        window = in_window(doc.get("recommendations") or [])
        if window and window_why is not None:
            out.discarded.append(f"{len(window)} stabilization recommendation(s): {window_why}")
        elif window:
            state.recommendations = deque(window, maxlen=HISTORY_POINTS)
            out.kept.append(f"{len(window)} stabilization recommendation(s) (highest {max(n for _, n in window)})")

    piece("stabilization recommendations", window_piece)
    since = out.saved_at if out.saved_at is not None else -math.inf
    newer = sorted(in_window((t, n) for t, n in logged if t > since))
    if newer and window_why is None:
        state.recommendations.extend(newer)
        out.kept.append(f"{len(newer)} newer stabilization recommendation(s) from the decision log "
                        f"(highest {max(n for _, n in newer)})")

    def failed_reads_piece() -> None:
        kept = {str(name): count(n) for name, n in dict(doc.get("failed_reads") or {}).items()
                if was.source_changed(str(name), identity) is None}
        state.failed_reads.update(kept)

    piece("failed reads in a row", failed_reads_piece)
    max_age = max(BASELINE_MIN_AGE_S, BASELINE_MAX_INTERVALS * svc.check_interval)
    age = None if out.saved_at is None else max(0.0, wall - out.saved_at)

    def baselines_piece() -> None:
        for name, data in dict(doc.get("sources") or {}).items():
            why = was.source_changed(str(name), identity)
            if why is None and age is None:
                why = "the time it was saved is unknown"
            elif why is None and age is not None and age > max_age:
                why = f"{age:.0f} s old (kept up to {max_age:.0f} s)"
            if why is not None:
                out.discarded.append(f"rate baseline of source {name}: {why}")
            elif isinstance(data, dict):
                fresh.sources[str(name)] = data

    piece("rate baselines", baselines_piece)

    def breaker_piece() -> None:
        b = doc.get("breaker")
        if b is None:
            return
        if was.llm != identity.llm:
            out.discarded.append("LLM circuit breaker: the llm endpoint or model changed")
            return
        fresh.breaker = Breaker(count(b["failures"]), future(b.get("open_until")), str(b.get("last_error") or "")[:300])
        left = "" if fresh.breaker.open_until is None else f", open {fresh.breaker.open_until - mono:.0f} s more"
        out.kept.append(f"LLM circuit breaker ({fresh.breaker.failures} failed call(s){left})")

    piece("LLM circuit breaker", breaker_piece)

    def attainment_piece() -> None:
        saved_window = doc.get("attainment")
        if saved_window is None or svc.policy != "docktor":
            return
        primary = next((spec.name for spec in svc.sources if spec.primary), "")
        why = was.source_changed(primary, identity)
        if why is None and svc.policy != was.policy:
            why = f"policy changed ({was.policy} -> {svc.policy})"
        if why is not None:
            out.discarded.append(f"wait-SLO attainment: {why}")
            return
        window = AttainmentWindow(svc.target_wait, max_gap=max_gap_for(svc.check_interval))
        kept = window.load(saved_window, to_mono=mono - wall, now=mono)
        if kept:
            state.attainment = window
            out.kept.append(f"wait-SLO attainment ({kept} span(s) of the last hour)")

    piece("wait-SLO attainment", attainment_piece)
    piece("the policy's memory", lambda: policy_memory.load(doc, svc, was, identity, out, wall=wall, mono=mono))
    return out


# --------------------------------------------------------------------------- the files


class StateStore:
    """``state_dir/state/<service>.json``, private (0700/0600, no links followed), each replaced atomically."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir / "state"
        self._checked = False

    def path(self, service: str) -> Path:
        return self.dir / f"{service}.json"

    def load(self, service: str) -> dict[str, Any] | None:
        """The saved document, None when there is none; ValueError when it cannot be read (or is
        not this user's own, private file: another user could have forged it)."""
        try:
            data = read_private(self.path(service))
        except OSError as e:
            raise ValueError(f"cannot read: {e.strerror or e}") from None
        if data is None:
            return None
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc

    def save(self, service: str, doc: Mapping[str, Any]) -> None:
        """Replace the service's file with ``doc``, durably (:func:`write_atomic`). Raises OSError
        (the previous file is then untouched)."""
        if not self._checked:
            private_dir(self.dir, what="state folder", tighten=True)
            self._checked = True
        write_atomic(self.path(service), json.dumps(doc, separators=(",", ":")).encode())
