"""The decision log: one JSON object per decision per service, in a size-rotated JSONL file.

Every line is written with a single ``write(2)`` on an ``O_APPEND`` descriptor, so a crash of the
daemon never leaves half a line behind for another writer to continue; readers still skip a line
that does not parse (a power cut can truncate a file), and say how many they skipped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from docktor.agent.core.decide import Decision
from docktor.agent.timestamps import parse_rfc3339, rfc3339


class Outcome(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "error"]
    message: str
    duration_ms: float
    retry_at: str | None = None  # when a failed service may scale up again


class DecisionRecord(BaseModel):
    """One line of the decision log."""

    model_config = ConfigDict(extra="allow")

    ts: str
    service: str
    mode: Literal["autonomous", "advisory", "dry-run"]
    current_replicas: int | None
    decision: Literal["scale_up", "scale_down", "hold"]
    target_replicas: int | None
    proposal: int | None = None
    reason: str
    policy: str | None = None
    source: Literal["rules", "policy", "llm", "fallback", "none"]
    observations: dict[str, float] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    matched_rules: list[str] = Field(default_factory=list)
    guardrails: list[dict[str, Any]] = Field(default_factory=list)
    envelope: dict[str, Any] | None = None
    executed: bool = False
    outcome: Outcome | None = None
    errors: list[str] = Field(default_factory=list)
    llm: dict[str, Any] | None = None

    @classmethod
    def from_decision(
        cls,
        d: Decision,
        *,
        mode: str,
        ts: float,
        executed: bool = False,
        outcome: Outcome | None = None,
        errors: list[str] | None = None,
    ) -> DecisionRecord:
        return cls(
            ts=rfc3339(ts),
            service=d.service,
            mode=mode,  # type: ignore[arg-type]
            current_replicas=d.current,
            decision=d.decision,
            target_replicas=d.target,
            proposal=d.proposal,
            reason=d.reason,
            policy=d.policy,
            source=d.source,
            observations={k: round(v, 4) for k, v in sorted(d.observations.items())},
            missing=d.missing,
            matched_rules=d.matched_rules,
            guardrails=[g.as_dict() for g in d.guardrails],
            envelope={"lo": d.envelope.lo, "hi": d.envelope.hi, "lo_by": d.envelope.lo_by, "hi_by": d.envelope.hi_by},
            executed=executed,
            outcome=outcome,
            errors=errors or [],
            llm=dict(d.advice) if d.advice is not None else None,
        )

    def line(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json", exclude_none=False), separators=(",", ":")) + "\n").encode()


class DecisionLog:
    """Appends records to ``path``; rotates to ``path.1`` … ``path.N`` past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: DecisionRecord) -> None:
        data = record.line()
        if os.fstat(self._fd).st_size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:  # a regular file takes it in one write; loop only for the pathological case
            n = os.write(self._fd, view)
            view = view[n:]

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            if self.path.exists():
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def log_files(path: Path) -> list[Path]:
    """The current log and its rotations, oldest first."""
    rotated = sorted(
        (p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return rotated + ([path] if path.exists() else [])


def _matches(rec: dict[str, Any], since: float | None, service: str | None) -> bool:
    if service is not None and rec.get("service") != service:
        return False
    if since is not None:
        try:
            return parse_rfc3339(str(rec.get("ts"))) >= since
        except ValueError:
            return False
    return True


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_records(path: Path, *, since: float | None = None, service: str | None = None) -> Iterator[dict[str, Any]]:
    """Every whole record of the log and its rotations, oldest first, skipping lines that do not parse."""
    for file in log_files(path):
        yield from read_records_in(file, since=since, service=service)


def read_records_in(file: Path, *, since: float | None = None, service: str | None = None) -> Iterator[dict[str, Any]]:
    """The records of one file."""
    try:
        f = file.open("rb")
    except FileNotFoundError:  # rotated away between listing and opening
        return
    with f:
        for line in f:
            rec = _parse(line)
            if rec is not None and _matches(rec, since, service):
                yield rec


def follow(
    path: Path,
    *,
    service: str | None = None,
    since: float | None = None,
    from_start: bool = False,
    poll: float = 0.25,
    stop: Any = None,
) -> Iterator[dict[str, Any]]:
    """Yield records appended after the call (or, with ``from_start``, the current file's records
    too), across rotations, until ``stop()`` returns True. One open file handle carries on from
    the history, so nothing written in between is lost or shown twice."""
    f = None
    inode = None
    buf = b""
    skip_existing = path.exists() and not from_start
    while not (stop and stop()):
        if f is None and path.exists():
            f = path.open("rb")
            inode = os.fstat(f.fileno()).st_ino
            if skip_existing:
                f.seek(0, os.SEEK_END)
        if f is not None:
            chunk = f.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    rec = _parse(line)
                    if rec is not None and _matches(rec, since, service):
                        yield rec
                continue
            try:
                if os.stat(path).st_ino != inode:  # rotated: read the new file from its start
                    f.close()
                    f = path.open("rb")
                    inode = os.fstat(f.fileno()).st_ino
                    buf = b""
                    continue
            except FileNotFoundError:
                pass
        time.sleep(poll)
    if f is not None:
        f.close()
