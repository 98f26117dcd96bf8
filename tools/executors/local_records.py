"""The local executor's records: which processes are a service's replicas, kept for the next daemon.

``<state_dir>/local/<name>.json`` lists every replica's slot, pid, start time (with the pid, its
identity: pids are reused), the token it carries in ``DOCKTOR_INSTANCE`` and whether it is being
stopped, with the service's replica count; ``<name>.lock`` is an flock held for the executor's
life, so two Docktor processes never run the same replicas.

A record is an instruction: the next daemon adopts or *signals* the processes it names. So the
folder is private (``0700``), the record is read only when it is this user's, private and not a
link (:func:`~docktor.tools.sdk.files.read_private`), and written whole or not at all, ``0600``
(:func:`~docktor.tools.sdk.files.write_atomic`). A record that fails those checks is refused with
one line and nothing it names is touched; the processes it names are checked again before any
signal (:mod:`.local_replicas`).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import docktor.tools.executors.procfs as procfs
from docktor.tools.executors.local_replicas import INSTANCE_VAR, Replica, Replicas
from docktor.tools.sdk import ExecutorError, UnsafePath, open_private, private_dir, read_private, write_atomic

STATE_VERSION = 1


class UnsafeRecords(ExecutorError):
    """The folder, the lock or the record is one another user could have written: nothing is done."""


class RecordedReplica(BaseModel):
    """One row of the record, as an earlier daemon wrote it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: 0: a process no record listed, being stopped
    slot: int = Field(ge=0)
    #: above 1: 0 and -1 are not processes but "my group" and "everyone" to kill()
    pid: int = Field(gt=1)
    start_ticks: int | None = None
    stopping: bool = False
    #: the replica's DOCKTOR_INSTANCE (None: written by a Docktor before it had one)
    instance: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What the record says, for this boot (rows of an earlier boot name nothing that still runs)."""

    desired: int
    spec: str | None
    replicas: list[RecordedReplica]


class ReplicaRecords:
    """The record and the lock of one service's replicas under ``<state_dir>/local/``."""

    def __init__(self, state_dir: Path, service: str) -> None:
        self.service = service
        self.folder = state_dir / "local"
        self.path = self.folder / f"{service}.json"
        self.lock_path = self.folder / f"{service}.lock"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the service's flock, in a private folder. Raises :class:`UnsafeRecords` when the
        folder or the lock file is unsafe, :class:`ExecutorError` when another process holds the
        lock or the file cannot be opened (one line each)."""
        try:
            private_dir(self.folder, what="the local executor's folder", tighten=True)
            fd = open_private(self.lock_path, os.O_RDWR, create=True)
        except UnsafePath as e:
            raise UnsafeRecords(f"not running the local replicas of {self.service!r}: {e}") from None
        except OSError as e:
            raise ExecutorError(f"cannot open {self.lock_path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ExecutorError(
                f"another Docktor process runs the local replicas of {self.service!r} (it holds {self.lock_path})"
            ) from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def load(self) -> tuple[Recorded, list[str]]:
        """The record, and what in it was set aside (an unreadable file, a malformed row).

        Raises :class:`UnsafeRecords` when the file is unsafe (another user's, writable by
        others, a link): acting on what anyone could have written is what must never happen.
        """
        problems: list[str] = []
        try:
            raw = read_private(self.path)
        except UnsafePath as e:
            raise UnsafeRecords(f"not acting on the recorded replicas of {self.service!r}: {e}") from None
        except OSError as e:
            raw, problems = None, [f"ignoring unreadable {self.path}: {e.strerror or e}"]
        data: Any = {}
        if raw is not None:
            try:
                data = json.loads(raw)
            except ValueError as e:
                problems.append(f"ignoring unreadable {self.path}: {e}")
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            data = {}
        boot = procfs.boot_id()
        same_boot = boot is not None and data.get("boot_id") == boot
        rows: list[RecordedReplica] = []
        for row in data.get("replicas", []) if same_boot else []:
            try:
                rows.append(RecordedReplica.model_validate(row))
            except ValidationError as e:
                problems.append(f"ignoring a malformed row of {self.path}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}")
        desired = data.get("desired", 0)
        spec = data.get("spec")
        return Recorded(
            desired if isinstance(desired, int) and not isinstance(desired, bool) and desired >= 0 else 0,
            spec if isinstance(spec, str) else None,
            rows,
        ), problems

    def save(self, desired: int, spec: str, rows: list[RecordedReplica]) -> str | None:
        """Replace the record in one step (``0600``); the reason when it could not be written."""
        data = {
            "version": STATE_VERSION, "service": self.service, "boot_id": procfs.boot_id(), "spec": spec,
            "daemon_pid": os.getpid(), "desired": desired,
            "replicas": [r.model_dump() for r in sorted(rows, key=lambda r: (r.slot, r.stopping))],
        }
        try:
            write_atomic(self.path, json.dumps(data).encode())
        except OSError as e:
            return f"cannot record replicas in {self.path}: {e.strerror or e}"
        return None


@dataclass(frozen=True)
class Adoption:
    """What becomes of the recorded replicas: those kept in their slot, those to stop."""

    kept: dict[int, Replica]
    to_stop: list[Replica]


def adopt(recorded: Recorded, replicas: Replicas, path: Path, *, spec: str) -> Adoption:
    """Decide, for each recorded replica, after checking the process it names is one of this
    service's (this user's, with its marker; otherwise it is left alone and said so once):

    * adopt it into its slot when it is still the same process (pid, start time, boot), runs what
      the config says (``spec``) and was not being stopped; stop it otherwise;
    * stop what is left of one that died: its session's members that are this service's, and
      what carries its instance mark;
    * stop any session leader carrying the service's marker that no record lists (a daemon
      killed between starting a replica and recording it), unless a recorded replica started it.
    """
    note = replicas.log.note
    kept: dict[int, Replica] = {}
    to_stop: list[Replica] = []
    #: instances whose processes are kept or being stopped: what they took out of their session is theirs
    theirs: set[str] = set()
    for r in recorded.replicas:
        if r.start_ticks is not None and procfs.same_process(r.pid, r.start_ticks):
            if why := replicas.foreign(r.pid):
                note(r.slot, f"not signalling pid {r.pid}, which {path} names as replica {r.slot}: it {why}")
                continue
            # the instance the process itself carries (a record of an older Docktor has none)
            instance = procfs.environ_value(r.pid, INSTANCE_VAR) or r.instance
            p = replicas.adopted(r.slot, r.pid, r.start_ticks, instance)
            if recorded.spec == spec and not r.stopping and r.slot not in kept:
                kept[r.slot] = p
                note(r.slot, f"adopted pid {r.pid}, left running by an earlier Docktor")
            else:
                why = "it was being stopped" if r.stopping else "the command or environment changed"
                note(r.slot, f"stopping pid {r.pid}, left by an earlier Docktor: {why}")
                to_stop.append(p)
        else:
            p = replicas.adopted(r.slot, r.pid, r.start_ticks, r.instance, gone=True)
            for member in procfs.by_session({r.pid})[r.pid] if procfs.available() else []:
                if why := replicas.foreign(member.pid):
                    note(r.slot, f"not signalling pid {member.pid}, left in the session of recorded replica pid {r.pid}: it {why}")
            if not replicas.left(p) and not replicas.strays(p):
                continue
            note(r.slot, f"replica pid {r.pid} is gone, but processes it started remain: stopping them")
            to_stop.append(p)
        if p.instance is not None:
            theirs.add(p.instance)
    for info in replicas.unrecorded({r.pid for r in recorded.replicas}, theirs):
        note(0, f"stopping pid {info.pid}: a replica of {replicas.service!r} no record lists")
        to_stop.append(replicas.adopted(0, info.pid, info.start_ticks, procfs.environ_value(info.pid, INSTANCE_VAR)))
    return Adoption(kept, to_stop)
