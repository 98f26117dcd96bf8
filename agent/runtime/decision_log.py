"""The decision log: one JSON object per decision per service, in a size-rotated JSONL file.

A log that never lies, even on a full disk:

* **Write-ahead.** A decision that calls the executor is written twice: an ``intent`` record
  (the whole decision, ``executed: false``) *before* the executor is called, and a short
  ``outcome`` record (same ``id``) after it. If the intent cannot be written, the daemon does not
  act. Decisions that do not act (holds, advisory, dry-run) are one record. Readers
  (:func:`read_records`, :func:`follow`, ``docktor daemon logs``) merge an intent with its outcome
  into one decision; an intent whose outcome never came (the daemon died while scaling) reads as
  ``outcome.status: unknown``.
* **Whole lines only.** Every line is written with one ``write(2)`` on an ``O_APPEND``
  descriptor. A write that fails or comes up short (the disk filled mid-line) is cut back to the
  file's last newline before the error is raised, so no torn line is left for the next record to
  be glued onto. A file found ending in a torn line when it is opened (a crash or a power cut
  mid-write) is cut back the same way, and the bytes cut are set aside in ``path.torn`` with a
  line in the daemon's log saying how many. Readers still skip a line that does not parse.
* **Private.** The file is ``0600`` in a ``0700`` folder, never opened through a link
  (:mod:`docktor.tools.sdk.files`): it names queues, observations and command lines.
* **Rotation** past ``max_bytes`` to ``path.1`` … ``path.N``: one directory listing per
  rotation, then one rename per backup that exists.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docktor.agent.core.decide import Decision
from docktor.agent.core.guardrails import Envelope
from docktor.agent.redact import redact, redact_obj
from docktor.agent.timestamps import rfc3339
from docktor.tools.sdk import UnsafePath, open_private, private_dir

log = logging.getLogger("docktor")

#: at most this much of a torn last line is kept aside (the rest of a runaway line is dropped)
MAX_SET_ASIDE = 1024 * 1024


class Outcome(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "error"]
    message: str
    duration_ms: float
    retry_at: str | None = None  # when a failed service may scale up again


class DecisionRecord(BaseModel):
    """One decision: one line, or the ``intent`` line of a decision that acts."""

    model_config = ConfigDict(extra="allow")

    ts: str
    service: str
    mode: Literal["autonomous", "advisory", "dry-run"]
    current_replicas: int | None
    decision: Literal["scale_up", "scale_down", "hold"]
    target_replicas: int | None
    proposal: int | None = None
    #: what the proposer wants within min/max, before the step limits and clocks: where the service
    #: is heading; ``target_replicas`` is what the guardrails let happen this tick
    wanted: int | None = None
    #: the policy's own count within min/max, before the guardrails: what the scale-down
    #: stabilization window remembers (a restart reads the newest back from the log's tail)
    recommendation: int | None = None
    reason: str
    policy: str | None = None
    source: Literal["rules", "policy", "llm", "fallback", "manual", "mcp", "none"]
    observations: dict[str, float] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    matched_rules: list[str] = Field(default_factory=list)
    guardrails: list[dict[str, Any]] = Field(default_factory=list)
    envelope: dict[str, Any] | None = None
    executed: bool = False
    outcome: Outcome | None = None
    errors: list[str] = Field(default_factory=list)
    llm: dict[str, Any] | None = None
    #: sources' on_missing fallbacks in force (absent when none)
    fallbacks: list[dict[str, Any]] | None = None
    #: the decision's identity: an intent and its outcome share it
    id: str | None = None
    #: ``intent`` on the line written before the executor acts; absent on a one-line decision
    phase: Literal["intent"] | None = None
    #: while the service is paused (``docktor pause``): ``{since, until, reason}``; absent otherwise
    paused: dict[str, Any] | None = None
    #: earlier executed actions judged at this tick, predicted vs observed (core/effect.py); absent when none
    effects: list[dict[str, Any]] | None = None
    #: live wait-SLO attainment (docktor policy): ``{target_wait_s, attainment_5m, attainment_60m,
    #: started_*, measured_*_s, why}`` (agent/core/attainment.py); absent without a wait target
    slo: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        # errors, reasons and the LLM's record quote peers' messages, which may quote a URL
        return redact_obj(data) if isinstance(data, dict) else data

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
        id: str | None = None,
    ) -> DecisionRecord:
        return cls(
            ts=rfc3339(ts),
            service=d.service,
            mode=mode,  # type: ignore[arg-type]
            current_replicas=d.current,
            decision=d.decision,
            target_replicas=d.target,
            proposal=d.proposal,
            wanted=d.wanted,
            recommendation=d.recommendation,
            reason=d.reason,
            policy=d.policy,
            source=d.source,
            observations={k: round(v, 4) for k, v in sorted(d.observations.items())},
            missing=d.missing,
            matched_rules=d.matched_rules,
            guardrails=[g.as_dict() for g in d.guardrails],
            envelope=_envelope(d.envelope),
            executed=executed,
            outcome=outcome,
            errors=errors or [],
            llm=dict(d.advice) if d.advice is not None else None,
            fallbacks=[f.as_dict() for f in d.fallbacks] or None,
            id=id,
            effects=[dict(e) for e in d.effects] or None,
        )

    def line(self) -> bytes:
        data = self.model_dump(mode="json", exclude_none=False)
        for optional in ("phase", "fallbacks", "paused", "effects", "slo"):
            if data.get(optional) is None:
                data.pop(optional, None)
        # again at the last moment: model_copy(update=...) does not validate
        return (redact(json.dumps(data, separators=(",", ":"))) + "\n").encode()


class OutcomeRecord(BaseModel):
    """The line written after the executor acted on the decision ``id`` (whose intent came first)."""

    model_config = ConfigDict(extra="allow")

    ts: str
    service: str
    id: str
    phase: Literal["outcome"] = "outcome"
    executed: bool = True
    outcome: Outcome

    def line(self) -> bytes:
        return (redact(json.dumps(self.model_dump(mode="json"), separators=(",", ":"))) + "\n").encode()


class LogWriteError(OSError):
    """A record could not be written (a full disk, a read-only or vanished file system).

    Nothing of it is left in the file: a failed or short write is cut back to the last whole line.
    """


class DecisionLog:
    """Appends records to ``path``; rotates to ``path.1`` … ``path.N`` past ``max_bytes``.

    :meth:`write` either appends one whole line or raises :class:`LogWriteError` and leaves the
    file ending in a whole line.
    """

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        private_dir(path.parent)
        self._fd = -1
        #: what opening the file cut from its end (a torn last line), said once in the daemon's log
        self.repaired: str | None = None
        try:
            self._fd = self._open()
        except UnsafePath:
            raise
        except OSError:
            pass  # e.g. a full disk that cannot take a new inode: the first write says so
        else:
            self._set_aside_torn_tail()

    def _open(self) -> int:
        # Read-write: after a short write the descriptor reads the tail back to cut it.
        return open_private(self.path, os.O_RDWR | os.O_APPEND, create=True)

    def _set_aside_torn_tail(self) -> None:
        """A file that does not end in a newline ends in a torn line (the writer died mid-write):
        cut it, so the next record is not glued onto it and lost, and keep the bytes in
        ``path.torn`` (bounded), saying so in the daemon's log."""
        try:
            size = os.fstat(self._fd).st_size
            if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
                return
            end = _last_newline_end(self._fd, size)
            torn = os.pread(self._fd, min(size - end, MAX_SET_ASIDE), end)
        except OSError:
            return
        aside = self.path.with_name(self.path.name + ".torn")
        try:
            fd = open_private(aside, os.O_WRONLY | os.O_APPEND, create=True)
            try:
                os.write(fd, torn + b"\n")
            finally:
                os.close(fd)
            where = f"set aside in {aside}" + (f" (its first {MAX_SET_ASIDE} bytes)" if size - end > MAX_SET_ASIDE else "")
        except OSError as e:
            where = f"not set aside: {aside}: {e.strerror or e}"
        try:
            os.ftruncate(self._fd, end)
        except OSError as e:
            self.repaired = f"{self.path}: ends in a torn line of {size - end} bytes that could not be cut ({e.strerror or e})"
        else:
            self.repaired = (f"{self.path}: its last {size - end} bytes were a torn line (a crash or a full disk "
                             f"mid-write), cut at open; {where}")
        log.warning("%s", self.repaired)

    def write(self, record: DecisionRecord | OutcomeRecord) -> None:
        """Append one record as one line, or raise :class:`LogWriteError` leaving no part of it."""
        data = record.line()
        try:
            if self._fd < 0:
                self._fd = self._open()
            if os.fstat(self._fd).st_size + len(data) > self.max_bytes:
                self._rotate()
            view = memoryview(data)
            while view:
                # A regular file takes a line in one write; a short one means the disk filled.
                n = os.write(self._fd, view)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
        except OSError as e:
            self._cut_torn_tail()
            raise LogWriteError(e.errno, e.strerror or str(e)) from None

    def _cut_torn_tail(self) -> None:
        """Truncate the file back to its last newline.

        The tail is searched, not remembered: ``decide --once`` may append whole lines to the same
        file between our size check and our write, and those must stay.
        """
        if self._fd < 0:
            return
        try:
            size = os.fstat(self._fd).st_size
            end = _last_newline_end(self._fd, size)
            if end < size:
                os.ftruncate(self._fd, end)
        except OSError:
            # Truncating frees space, so this fails only on a broken file system: start afresh
            # with a new descriptor on the next write.
            self._close_fd()

    def _rotate(self) -> None:
        """``path`` -> ``path.1`` -> ``path.2`` …: one directory listing, then one rename per
        backup that exists (never one ``exists()`` per configured backup)."""
        self._close_fd()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            prefix = self.path.name + "."
            with os.scandir(self.path.parent) as entries:
                present = sorted(
                    (int(e.name[len(prefix):]) for e in entries if e.name.startswith(prefix) and e.name[len(prefix):].isdigit()),
                    reverse=True,
                )
            for i in present:
                src = self.path.with_name(f"{prefix}{i}")
                if i >= self.backups:
                    src.unlink(missing_ok=True)
                else:
                    src.replace(self.path.with_name(f"{prefix}{i + 1}"))
            try:
                self.path.replace(self.path.with_name(f"{prefix}1"))
            except FileNotFoundError:
                pass
        self._fd = self._open()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass  # nothing more can be saved; the lines already written are whole
            self._close_fd()


def _last_newline_end(fd: int, size: int) -> int:
    """The offset just after the last newline among the first ``size`` bytes of ``fd`` (0: none)."""
    end = size
    while end > 0:
        start = max(0, end - 4096)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _envelope(env: Envelope) -> dict[str, Any]:
    out: dict[str, Any] = {"lo": env.lo, "hi": env.hi, "lo_by": env.lo_by, "hi_by": env.hi_by}
    if env.lo_left is not None:
        out["lo_left_s"] = round(env.lo_left, 1)
    if env.hi_left is not None:
        out["hi_left_s"] = round(env.hi_left, 1)
    return out
