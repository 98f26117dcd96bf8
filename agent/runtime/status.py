"""The daemon's status: what ``daemon status`` shows live (over the control socket), and the
status file that answers for a daemon that cannot (stuck, or busy stopping).

The file is rewritten at most every :data:`STATUS_EVERY_S` while decisions come in: each write
serializes every service, so one write per decision made it most of a many-service daemon's CPU.
On a full disk it is rewritten in place, into the blocks its last good write allocated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docktor.agent.redact import redact
from docktor.agent.timestamps import rfc3339
from docktor.tools.sdk import open_private, write_atomic

if TYPE_CHECKING:
    from docktor.agent.runtime.service_loop import ServiceLoop
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: the status file is rewritten at most this often while decisions come in
STATUS_EVERY_S = 0.25
#: the status file is padded to a whole number of these, with one to spare, so that on a full
#: disk it can still be rewritten in place (overwriting allocated blocks needs no new ones)
STATUS_BLOCK = 4096


def status_document(daemon: Supervisor) -> dict[str, Any]:
    """Everything ``daemon status`` shows: the process, the decision log's health, and per
    service its replicas, last decision, pause, bounds, clocks and restored state."""
    services = {}
    for name, loop in daemon.loops.items():
        s = loop.last_status
        services[name] = {
            "replicas": None if s is None else {"desired": s.desired, "running": s.running, "failed": s.failed},
            "last_decision": None if loop.last_record is None else {
                k: getattr(loop.last_record, k) for k in ("ts", "decision", "current_replicas", "target_replicas", "wanted", "reason", "errors", "executed")
            },
            #: live wait-SLO attainment (docktor policy), as the last decision record carries it
            "slo": None if loop.last_record is None else loop.last_record.slo,
            "paused": None if loop.pause is None or not loop.pause.active(daemon.wall()) else loop.pause.as_dict(),
            "bounds": {"min": loop.svc.min_replicas, "max": loop.svc.max_replicas},
            "policy": loop.svc.policy,
            "clocks": clocks(loop, daemon.mono()),
            "restored": None if loop.restored is None else loop.restored.as_dict(),
            "state_file_error": loop.save_error,
        }
    config = daemon.config
    return {
        "pid": os.getpid(), "started_at": rfc3339(daemon.started_at), "mode": daemon.mode, "phase": daemon.phase,
        "config": None if config.path is None else str(config.path.resolve()), "state_dir": str(daemon.state_dir),
        "decision_log": daemon.recorder.health(), "status_file_error": daemon.status_file.error, "services": services,
    }


def clocks(loop: ServiceLoop, now: float) -> dict[str, float]:
    """The clock guardrails holding a direction now, with the seconds each has left (none: absent)."""
    s, svc = loop.state, loop.svc
    left: dict[str, float] = {}
    if s.last_up_at is not None and now - s.last_up_at < svc.cooldown_up:
        left["cooldown_up_s"] = round(svc.cooldown_up - (now - s.last_up_at), 1)
    last = s.last_action_at()
    if last is not None and now - last < svc.cooldown_down:
        left["cooldown_down_s"] = round(svc.cooldown_down - (now - last), 1)
    if s.backoff_until is not None and now < s.backoff_until:
        left["backoff_s"] = round(s.backoff_until - now, 1)
    return left


class StatusFile:
    """``state_dir/status.json``, kept close behind the decisions (None: no file, e.g. ``decide --once``)."""

    def __init__(self, path: Path | None, document: Callable[[], dict[str, Any]]):
        self.path = path
        self._document = document
        self.error: str | None = None  # the last failed write, for the log and ``daemon status``
        self._due: asyncio.TimerHandle | None = None  # the write that will carry the latest decisions
        self._written = -math.inf  # time.monotonic() of the last write

    def soon(self) -> None:
        """Have the file show the latest decisions within :data:`STATUS_EVERY_S`: the first decision
        after a quiet spell is written at once (on the loop's next turn), the ones that follow it
        within the interval share the next write."""
        if self.path is None or self._due is not None:
            return
        delay = max(0.0, self._written + STATUS_EVERY_S - time.monotonic())
        self._due = asyncio.get_running_loop().call_later(delay, self.write)

    def flush(self) -> None:
        """Write now what a pending write would have carried."""
        if self._due is not None:
            self.write()

    def write(self) -> None:
        """Refresh the file now; on a full disk in place, and never at the cost of a tick."""
        if self.path is None:
            return
        if self._due is not None:  # this write carries what that one would have
            self._due.cancel()
            self._due = None
        self._written = time.monotonic()
        try:
            write_status_file(self.path, self._document())
        except OSError as e:
            if self.error is None:
                log.error("status file %s not writable: %s", self.path, e.strerror or e)
            self.error = e.strerror or str(e)
        else:
            self.error = None


def write_status_file(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``status`` as JSON (0600); on a full disk, rewrite it in place.

    Raises OSError only when neither works (the caller logs it; a status file is never worth a
    crash). Padding with spaces keeps the JSON valid.
    """
    text = redact(json.dumps(status)).encode()
    padded = text + b" " * ((-len(text)) % STATUS_BLOCK + STATUS_BLOCK)
    try:
        write_atomic(path, padded, sync=False)
        return
    except OSError:
        pass
    # In place, into the blocks the last good write allocated. A reader may catch it half
    # rewritten for a moment; ``daemon status`` then shows what it can and tries again next time.
    fd = open_private(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        if len(text) > size:
            # keep what must be seen (the log's state) and drop the per-service detail
            text = redact(json.dumps({k: v for k, v in status.items() if k != "services"})).encode()
            if len(text) > size:
                raise OSError(28, "status does not fit its file on a full disk")
        os.pwrite(fd, text + b" " * (size - len(text)), 0)
    finally:
        os.close(fd)
