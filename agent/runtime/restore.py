"""A service's state when the daemon starts (or a reload restarts it), from three witnesses.

1. its state file (:mod:`.persist`: what is kept, and why a piece is discarded);
2. the decision log's tail: an action whose intent is in the log but not in the state file (the
   daemon died before saving it, maybe while the executor acted) counts from its decision's
   time, and the stabilization window's newest recommendations come back from it;
3. the executor's own record of its last scale (:meth:`docktor.tools.sdk.Executor.last_scaled`),
   like Nomad Autoscaler reading the target's last scaling event.

Whichever is latest wins; every piece kept or discarded is logged once, with its reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docktor.agent.runtime.log_reader import lines_backwards, log_files
from docktor.agent.runtime.persist import restore
from docktor.agent.runtime.saved_values import CLOCK_SLACK_S, MAX_AHEAD_S, instant
from docktor.agent.timestamps import parse_rfc3339
from docktor.tools.sdk import one_line

if TYPE_CHECKING:
    from docktor.agent.runtime.service_loop import ServiceLoop
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: how long the executor's own record of its last scale may take to read at start
LAST_SCALED_TIMEOUT_S = 10.0
#: how much of the decision log's tail is read back at start: at about 800 bytes a decision,
#: the last 5 s of 500 services deciding every second
LOG_TAIL_BYTES = 2 * 1024 * 1024


async def restore_loops(daemon: Supervisor, loops: list[ServiceLoop]) -> None:
    """Each loop's saved state, as far as it still means something; then the decision log's
    newer actions (and, in :func:`~.persist.restore`, its newer recommendations) and the
    executor's own last scale, whichever is latest."""
    wall, mono = daemon.wall(), daemon.mono()
    tail = await asyncio.to_thread(read_log_tail, daemon.log.path)  # the newest decisions, which the state files may not have yet
    for loop in loops:
        loop.identity = daemon.identity_of(loop)
        try:
            doc = daemon.store.load(loop.name)
            restored = restore(doc, loop.identity, loop.svc, wall=wall, mono=mono, logged=tail.recommendations.get(loop.name, ()))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s: state file %s unusable (%s): starting without it", loop.name, daemon.store.path(loop.name), e)
            restored = restore(None, loop.identity, loop.svc, wall=wall, mono=mono)
            restored.discarded.append(f"the whole state file: {e}")
        loop.restored = restored
        saved = restored.saved
        loop.state, loop.pause = saved.state, saved.pause
        elapsed = 0.0 if restored.saved_at is None else max(0.0, wall - restored.saved_at)
        for spec, source in loop.sources:
            data = saved.sources.get(spec.name)
            if data is None:
                continue
            try:
                ok = source.restore(data, elapsed)
            except Exception as e:  # a plugin's bug costs its baseline, never the start
                ok, why = False, one_line(e)
            else:
                why = "the source refused it"
            if ok:
                restored.kept.append(f"rate baseline of source {spec.name} ({elapsed:.0f} s old)")
            else:
                restored.discarded.append(f"rate baseline of source {spec.name}: {why}")
        if saved.breaker is not None and daemon.advisor is not None:
            b = saved.breaker
            daemon.advisor.restore_breaker(loop.name, b.failures, b.open_until, b.last_error)
    # Write-ahead: an action whose intent is in the log but not in the state file (the daemon
    # died before saving it, maybe while the executor acted) counts from its decision's time.
    for loop in loops:
        assert loop.restored is not None
        if loop.name not in tail.events or not loop.restored.same_executor:
            continue
        since = None if loop.restored.saved_at is None else loop.restored.saved_at - 2.0
        # a line dated ahead of this clock (a corrupted or forged line) says nothing about the past
        plausible = [e for e in tail.events[loop.name] if e.ts <= wall + CLOCK_SLACK_S
                     and (e.retry_at is None or e.retry_at <= wall + MAX_AHEAD_S)]
        acts = fold(plausible, since)
        if acts.ids:
            _apply_logged(loop, acts, wall, mono)
    await asyncio.gather(*(_apply_last_scaled(loop, wall, mono) for loop in loops))
    for loop in loops:
        r = loop.restored
        assert r is not None
        if r.kept or r.discarded:
            saved_ago = "" if r.saved_at is None else f" (saved {max(0.0, wall - r.saved_at):.1f} s ago)"
            if r.kept:
                log.info("%s: state restored%s: %s", loop.name, saved_ago, "; ".join(r.kept))
            for d in r.discarded:  # a one-shot dry run only reads: no need to shout
                log.log(logging.WARNING if daemon.state_mode == "write" else logging.INFO,
                        "%s: saved state discarded: %s", loop.name, d)


def _apply_logged(loop: ServiceLoop, acts: LoggedActions, wall: float, mono: float) -> None:
    assert loop.restored is not None
    s = loop.state
    applied = []
    for direction, t in (("up", acts.last_up_at), ("down", acts.last_down_at)):
        if t is None:
            continue
        at = mono - max(0.0, wall - t)
        current = s.last_up_at if direction == "up" else s.last_down_at
        if current is None or at > current + 0.5:
            if direction == "up":
                s.last_up_at = at
            else:
                s.last_down_at = at
            applied.append(f"scale-{direction} {wall - t:.0f} s ago")
    if acts.backoff_until is not None and acts.backoff_until > wall:
        until = mono + (acts.backoff_until - wall)
        if s.backoff_until is None or until > s.backoff_until:
            s.backoff_until, s.failures = until, max(s.failures, acts.failures)
            applied.append(f"back-off, {acts.backoff_until - wall:.0f} s left")
    if applied:
        loop.restored.kept.append(
            f"from the decision log, not yet in the state file: {', '.join(applied)} (decision {describe_ids(acts.ids)}; "
            "an intent without an outcome counts as done)"
        )


async def _apply_last_scaled(loop: ServiceLoop, wall: float, mono: float) -> None:
    assert loop.restored is not None
    try:
        last = await asyncio.wait_for(loop.executor.last_scaled(), min(LAST_SCALED_TIMEOUT_S, max(1.0, loop.svc.check_interval)))
    except Exception as e:
        log.info("%s: the executor could not say when it last scaled (%s)", loop.name, one_line(e))
        return
    if last is None:
        return
    try:
        when = instant(last.at, wall)
    except ValueError as e:
        log.warning("%s: the executor's last scale is not a time it can mean (%s): ignored", loop.name, e)
        return
    at = mono - max(0.0, wall - when)
    s = loop.state
    moved = []
    if last.direction in ("up", None) and (s.last_up_at is None or at > s.last_up_at + 0.5):
        s.last_up_at = at
        moved.append("up")
    if last.direction in ("down", None) and (s.last_down_at is None or at > s.last_down_at + 0.5):
        s.last_down_at = at
        moved.append("down")
    if moved:
        loop.restored.kept.append(
            f"the executor's last scale {max(0.0, wall - when):.0f} s ago (cooldown_{'/cooldown_'.join(moved)} count from it)"
        )


# --------------------------------------------------------------------------- what the decision log adds


@dataclass
class LoggedActions:
    """What a service's executor was asked to do, as the decision log's tail tells it."""

    last_up_at: float | None = None  # wall clock of the decision
    last_down_at: float | None = None
    backoff_until: float | None = None
    failures: int = 0
    ids: list[str] = field(default_factory=list)  # the decisions found, newest last


@dataclass(frozen=True)
class LoggedEvent:
    """One decision that called the executor, as the log has it."""

    ts: float  # wall clock of the decision
    id: str
    decision: str
    status: str  # ok, error, unknown (an intent without its outcome)
    retry_at: float | None = None


@dataclass
class LogTail:
    """What the decision log's tail tells of each service, oldest first."""

    #: the decisions that called the executor
    events: dict[str, list[LoggedEvent]] = field(default_factory=dict)
    #: ``(wall clock, recommendation)`` of every decision that carries one
    recommendations: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


def read_log_tail(log_path: Path, tail_bytes: int = LOG_TAIL_BYTES) -> LogTail:
    """The decision log's tail, per service. An intent without its outcome is ``unknown``: the
    executor may have acted before the daemon died (write-ahead: the intent is written first)."""
    # newest first, across a rotation that may just have moved the latest decisions into .1
    lines = [line for line in lines_backwards(list(reversed(log_files(log_path))), tail_bytes) if line is not None]
    lines.reverse()
    tail = LogTail()
    intents: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        phase = rec.get("phase")
        if phase == "outcome":
            if rec.get("id") is not None:
                outcomes[str(rec["id"])] = rec
            continue
        if phase == "intent" and rec.get("id") is not None:
            intents[str(rec["id"])] = rec
        n = rec.get("recommendation")
        if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            try:
                ts = parse_rfc3339(str(rec["ts"]))
            except (KeyError, ValueError):
                continue
            tail.recommendations.setdefault(str(rec.get("service")), []).append((ts, n))
    for key, rec in intents.items():
        try:
            ts = parse_rfc3339(str(rec["ts"]))
        except (KeyError, ValueError):
            continue
        outcome = (outcomes.get(key) or {}).get("outcome") or {}
        retry_at = None
        if outcome.get("retry_at"):
            try:
                retry_at = parse_rfc3339(str(outcome["retry_at"]))
            except ValueError:
                pass
        status = str(outcome.get("status") or "unknown")
        tail.events.setdefault(str(rec.get("service")), []).append(LoggedEvent(ts, key, str(rec.get("decision")), status, retry_at))
    return tail


def fold(events: Iterable[LoggedEvent], since: float | None) -> LoggedActions:
    """What ``events`` at or after ``since`` (None: all) mean for the cooldown clocks and back-off."""
    acts = LoggedActions()
    for e in sorted(events, key=lambda e: e.ts):
        if since is not None and e.ts < since:
            continue
        acts.ids.append(e.id)
        if e.status == "error":
            acts.failures += 1
            if e.retry_at is not None:
                acts.backoff_until = max(acts.backoff_until or 0.0, e.retry_at)
            continue
        # ok, or unknown: the count may have changed at the decision's time
        if e.decision == "scale_up":
            acts.last_up_at = e.ts
        elif e.decision == "scale_down":
            acts.last_down_at = e.ts
        acts.failures, acts.backoff_until = 0, None
    return acts


def describe_ids(ids: Iterable[str]) -> str:
    ids = list(ids)
    return ", ".join(ids[-3:]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
