"""Each service's state, saved as it changes and restored when the daemon starts again.

A restart must not reset the guardrails: a daemon killed a second after a scale-up that comes
back and scales up again at once has broken ``cooldown_up`` as surely as one that never had it.
So, per service, ``state_dir/state/<service>.json`` holds what the decisions remember between
ticks (docs/operations.md, "Restarts"):

* the cooldown clocks (last scale-up, last scale-down) and the executor's back-off;
* the scale-down stabilization window's recommendations;
* per source, its rate baseline (:meth:`docktor.tools.sdk.Source.snapshot`) and its failed reads
  in a row (``on_missing``);
* the LLM circuit breaker; and a pause (``docktor pause``).

Times are saved as wall-clock instants and turned back into the daemon's monotonic clock at
restore, so the time spent down counts: a cooldown of 120 s with 100 s spent down has 20 s left.

Each piece is kept only while what gives it meaning is unchanged (:class:`Identity`); a piece
that lost its meaning is discarded with a log line saying which and why. The file is replaced
atomically (temporary file, ``fsync``, ``rename``, ``fsync`` of the folder); a failed write
(a full disk) leaves the previous file whole, is logged, and never stops a tick.

The file is written after the decision log, so a daemon killed between its intent line and its
state file (or while its executor acted) left a newer record in the log than in the file:
:func:`read_log_tail` reads the log's tail back at start for exactly that. The same tail gives
back the stabilization window's newest recommendations (each decision line carries its
``recommendation``), which is why the daemon need not rewrite the file every tick: only when
something a tick cannot rebuild changed (:meth:`Snapshot.durable`), and otherwise every few
seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docktor.agent.config.model import LLMConfig, ServiceConfig, SourceSpec
from docktor.agent.core.state import HISTORY_POINTS, ServiceState
from docktor.agent.timestamps import parse_rfc3339, rfc3339

log = logging.getLogger("docktor")

VERSION = 1
#: a source's baseline older than this many check intervals (and at least BASELINE_MIN_AGE_S) is
#: dropped: a rate averaged over a long outage would hide what the queue did meanwhile
BASELINE_MAX_INTERVALS = 5
BASELINE_MIN_AGE_S = 60.0
#: how much of the decision log's tail is read back at start (per file): at about 800 bytes a
#: decision, the last 5 s of 500 services deciding every second
LOG_TAIL_BYTES = 2 * 1024 * 1024


# --------------------------------------------------------------------------- identity


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def source_identity(spec: SourceSpec) -> str:
    """A source is the same source while its kind and settings are (its name keys it)."""
    return f"{spec.kind}:{_digest(spec.kind, spec.settings.model_dump_json())}"


def executor_identity(svc: ServiceConfig, target: str | None) -> str:
    """What the service's replicas are: the executor's own name for its target when it has one
    (``compose:<engine>/<project>/<service>``), else its kind and settings."""
    if svc.executor is None:
        return "none"
    if target is not None:
        return f"{svc.executor.kind}:{target}"
    return f"{svc.executor.kind}:{_digest(svc.executor.kind, svc.executor.settings.model_dump_json())}"


def llm_identity(llm: LLMConfig) -> str | None:
    """The breaker belongs to an endpoint and model; None without an LLM."""
    if llm.provider == "none":
        return None
    return f"{llm.provider} {llm.base_url or ''} {llm.model or ''}".strip()


@dataclass(frozen=True)
class Identity:
    """What gives each saved piece its meaning."""

    executor: str
    min_replicas: int
    max_replicas: int
    policy: str
    sources: dict[str, str]
    llm: str | None

    @classmethod
    def of(cls, svc: ServiceConfig, target: str | None, llm: LLMConfig) -> Identity:
        return cls(
            executor=executor_identity(svc, target), min_replicas=svc.min_replicas, max_replicas=svc.max_replicas,
            policy=svc.policy, sources={s.name: source_identity(s) for s in svc.sources}, llm=llm_identity(llm),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"executor": self.executor, "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "policy": self.policy, "sources": dict(self.sources), "llm": self.llm}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Identity:
        return cls(executor=str(d["executor"]), min_replicas=int(d["min_replicas"]), max_replicas=int(d["max_replicas"]),
                   policy=str(d["policy"]), sources={str(k): str(v) for k, v in dict(d["sources"]).items()},
                   llm=None if d.get("llm") is None else str(d["llm"]))

    def executor_changed(self, new: Identity) -> str | None:
        return "the executor changed (another deployment)" if self.executor != new.executor else None

    def window_changed(self, new: Identity) -> str | None:
        """Why the stabilization recommendations no longer mean anything, or None."""
        why = []
        if self.executor != new.executor:
            why.append("the executor changed")
        if self.min_replicas != new.min_replicas:
            why.append(f"min_replicas changed ({self.min_replicas} -> {new.min_replicas})")
        if self.max_replicas != new.max_replicas:
            why.append(f"max_replicas changed ({self.max_replicas} -> {new.max_replicas})")
        if self.policy != new.policy:
            why.append(f"policy changed ({self.policy} -> {new.policy})")
        return ", ".join(why) or None

    def source_changed(self, name: str, new: Identity) -> str | None:
        if name not in new.sources:
            return f"source {name} is no longer configured"
        if self.sources.get(name) != new.sources[name]:
            return f"source {name} changed"
        return None


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
class Snapshot:
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


def capture(snap: Snapshot, *, service: str, window: float, wall: float, mono: float) -> dict[str, Any]:
    """``snap`` as the JSON document of the state file."""
    s = snap.state

    def at(t: float | None) -> float | None:
        return None if t is None else wall - (mono - t)

    recent = [[round(at(t) or 0.0, 3), n] for t, n in s.recommendations if t > mono - window]
    breaker = snap.breaker
    return {
        "version": VERSION,
        "service": service,
        "saved_at": wall,
        "saved": rfc3339(wall),
        "pid": os.getpid(),
        "identity": snap.identity.as_dict(),
        "last_up_at": at(s.last_up_at),
        "last_down_at": at(s.last_down_at),
        "failures": s.failures,
        "backoff_until": at(s.backoff_until),
        "recommendations": recent,
        "failed_reads": dict(s.failed_reads),
        "sources": snap.sources,
        "breaker": None if breaker is None or breaker.failures == 0 else {
            "failures": breaker.failures, "open_until": at(breaker.open_until), "last_error": breaker.last_error,
        },
        "pause": None if snap.pause is None else {"since": snap.pause.since, "until": snap.pause.until, "reason": snap.pause.reason},
    }


@dataclass
class Restored:
    """What :func:`restore` made of a state file: the pieces kept, and a line per piece dropped."""

    snapshot: Snapshot
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

    Raises ValueError (or KeyError/TypeError) for a document that does not parse; the caller
    logs it and starts afresh.
    """
    fresh = Snapshot(identity, ServiceState())
    if doc is None:
        return Restored(fresh)
    if doc.get("version") != VERSION:
        raise ValueError(f"unknown state file version {doc.get('version')!r}")
    old = Identity.from_dict(doc["identity"])
    saved_at = _finite(doc["saved_at"])
    out = Restored(fresh, saved_at=saved_at)
    state = fresh.state

    def past(t: Any) -> float | None:
        """An instant that has happened, in the monotonic clock (never in the future)."""
        if t is None:
            return None
        return mono - max(0.0, wall - _finite(t))

    def future(t: Any) -> float | None:
        """A deadline, in the monotonic clock (None once passed)."""
        if t is None:
            return None
        left = _finite(t) - wall
        return mono + left if left > 0 else None

    if doc.get("pause") is not None:
        p = doc["pause"]
        pause = Pause(_finite(p["since"]), None if p.get("until") is None else _finite(p["until"]), str(p.get("reason") or ""))
        if pause.active(wall):
            fresh.pause = pause
            out.kept.append(f"paused {pause.text()}")

    why = old.executor_changed(identity)
    if why is not None:
        out.same_executor = False
        out.discarded.append(f"cooldown clocks and back-off: {why}")
    else:
        state.last_up_at, state.last_down_at = past(doc.get("last_up_at")), past(doc.get("last_down_at"))
        state.failures = int(doc.get("failures") or 0)
        state.backoff_until = future(doc.get("backoff_until"))
        clocks = [f"last scale-{d} {mono - t:.0f} s ago" for d, t in (("up", state.last_up_at), ("down", state.last_down_at))
                  if t is not None]
        if clocks:
            out.kept.append(", ".join(clocks))
        if state.backoff_until is not None:
            out.kept.append(f"back-off after {state.failures} failed scale(s), {state.backoff_until - mono:.0f} s left")

    why = old.window_changed(identity)

    def in_window(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[float, int]]:
        recs = [(past(t), int(n)) for t, n in pairs]
        return [(t, n) for t, n in recs if t is not None and t > mono - svc.scale_down_stabilization]

    window = in_window(doc.get("recommendations") or [])
    if window and why is not None:
        out.discarded.append(f"{len(window)} stabilization recommendation(s): {why}")
    elif window:
        state.recommendations = deque(window, maxlen=HISTORY_POINTS)
        out.kept.append(f"{len(window)} stabilization recommendation(s) (highest {max(n for _, n in window)})")
    newer = sorted(in_window((t, n) for t, n in logged if t > saved_at))
    if newer and why is None:
        state.recommendations.extend(newer)
        out.kept.append(f"{len(newer)} newer stabilization recommendation(s) from the decision log "
                        f"(highest {max(n for _, n in newer)})")

    max_age = max(BASELINE_MIN_AGE_S, BASELINE_MAX_INTERVALS * svc.check_interval)
    age = max(0.0, wall - saved_at)
    for name, count in dict(doc.get("failed_reads") or {}).items():
        if old.source_changed(name, identity) is None:
            state.failed_reads[str(name)] = int(count)
    for name, data in dict(doc.get("sources") or {}).items():
        why = old.source_changed(name, identity)
        if why is None and age > max_age:
            why = f"{age:.0f} s old (kept up to {max_age:.0f} s)"
        if why is not None:
            out.discarded.append(f"rate baseline of source {name}: {why}")
        elif isinstance(data, dict):
            fresh.sources[str(name)] = data

    b = doc.get("breaker")
    if b is not None:
        if old.llm != identity.llm:
            out.discarded.append("LLM circuit breaker: the llm endpoint or model changed")
        else:
            fresh.breaker = Breaker(int(b["failures"]), future(b.get("open_until")), str(b.get("last_error") or ""))
            left = "" if fresh.breaker.open_until is None else f", open {fresh.breaker.open_until - mono:.0f} s more"
            out.kept.append(f"LLM circuit breaker ({fresh.breaker.failures} failed call(s){left})")
    return out


def _finite(value: Any) -> float:
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"not a finite time: {value!r}")
    return x


# --------------------------------------------------------------------------- the files


class StateStore:
    """``state_dir/state/<service>.json``, each replaced atomically."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir / "state"

    def path(self, service: str) -> Path:
        return self.dir / f"{service}.json"

    def load(self, service: str) -> dict[str, Any] | None:
        """The saved document, None when there is none; ValueError when it cannot be read."""
        try:
            text = self.path(service).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ValueError(f"cannot read: {e.strerror or e}") from None
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc

    def save(self, service: str, doc: Mapping[str, Any]) -> None:
        """Replace the service's file with ``doc``: temporary file, fsync, rename, fsync of the
        folder. Raises OSError (the previous file is then untouched)."""
        path = self.path(service)
        data = json.dumps(doc, separators=(",", ":")).encode()
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------- the log's tail


@dataclass
class LoggedActions:
    """What a service's executor was asked to do, as the decision log's tail tells it."""

    last_up_at: float | None = None  # wall clock of the decision
    last_down_at: float | None = None
    backoff_until: float | None = None
    failures: int = 0
    ids: list[str] = field(default_factory=list)  # the decisions found, newest last


def _tail_lines(path: Path, nbytes: int) -> list[bytes]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - nbytes)
            f.seek(start)
            data = f.read(nbytes)
    except OSError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    return [line for line in lines if line.strip()]


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
    lines: list[bytes] = []
    try:
        small = log_path.stat().st_size < tail_bytes
    except OSError:
        small = True
    if small:  # a rotation may just have moved the latest decisions into .1
        lines += _tail_lines(log_path.with_name(log_path.name + ".1"), tail_bytes)
    lines += _tail_lines(log_path, tail_bytes)
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
