"""The user's run folder: where a config's daemon keeps its state, and who scales which target.

Two things live outside any one config's ``state_dir``, in a private per-user folder
(``$DOCKTOR_RUN_DIR``, else ``$XDG_RUNTIME_DIR/docktor``, else ``~/.cache/docktor/run``, else
``/tmp/docktor-<uid>``; created mode 0700 and used only when it is ours and not a link):

* **pointers** ``configs/<hash of the config's absolute path>.json``: a started daemon records
  where its state is, so ``daemon stop`` and ``daemon status`` find it when the config file has
  since been broken (or changed its ``state_dir``);
* **target locks** ``targets/<hash of the target>.lock``: an executor's target
  (:meth:`docktor.tools.sdk.Executor.target`, e.g. a Compose service) is held with an ``flock``
  by the one process acting on it (a daemon, or ``decide --once``); a second one, from any
  config, is refused with the holder's pid and config. The kernel drops a lock when its holder
  dies, so a crashed daemon never blocks the next one.

The locks are per user and per machine: two users, or two machines sharing a Swarm, are not
stopped from scaling the same target.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class RunDirError(Exception):
    pass


def _private(path: Path, tighten: bool) -> Path | None:
    """``path`` created (mode 0700) if needed; None unless it is a folder only this user controls.
    ``tighten``: a folder Docktor names (``.../docktor``) is made 0700; one the user named is not."""
    from docktor.tools.sdk import private_dir

    try:
        return private_dir(path, tighten=tighten)
    except OSError:  # UnsafePath included: another candidate is tried
        return None


def run_dir() -> Path:
    """The first usable of the candidates above; RunDirError when none is."""
    env = os.environ.get("DOCKTOR_RUN_DIR")
    candidates: list[Path] = []
    if env:
        candidates.append(Path(env))
    else:
        if os.environ.get("XDG_RUNTIME_DIR"):
            candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "docktor")
        with contextlib.suppress(RuntimeError):
            candidates.append(Path.home() / ".cache" / "docktor" / "run")
        candidates.append(Path("/tmp") / f"docktor-{os.getuid()}")
    for c in candidates:
        found = _private(c, tighten=not env)
        if found is not None:
            return found
    raise RunDirError(f"no private run folder usable (tried {', '.join(map(str, candidates))})")


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- pointers


def pointer_path(config_path: Path) -> Path:
    return run_dir() / "configs" / f"{_key(str(config_path.resolve()))}.json"


def write_pointer(config_path: Path, info: dict[str, Any]) -> None:
    """Record where the daemon of ``config_path`` keeps its state (atomically)."""
    from docktor.tools.sdk import private_dir, write_atomic

    path = pointer_path(config_path)
    private_dir(path.parent, tighten=True)
    write_atomic(path, json.dumps({"config": str(config_path.resolve()), **info}).encode(), sync=False)


def read_pointer(config_path: Path) -> dict[str, Any] | None:
    from docktor.tools.sdk import read_private

    try:
        data = read_private(pointer_path(config_path))
        doc = json.loads(data) if data is not None else None
    except (OSError, ValueError, RunDirError):
        return None
    if not isinstance(doc, dict) or doc.get("config") != str(config_path.resolve()) or not doc.get("state_dir"):
        return None
    return doc


# --------------------------------------------------------------------------- target locks


@dataclass
class TargetLock:
    target: str
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class TargetBusy(Exception):
    """Another process acts on the target; ``holder`` is what it recorded (pid, config, what)."""

    def __init__(self, target: str, holder: dict[str, Any]):
        self.target = target
        self.holder = holder
        who = holder.get("what") or "docktor"
        pid = holder.get("pid", "?")
        config = holder.get("config")
        super().__init__(f"{target} is already scaled by {who} (pid {pid}{f', config {config}' if config else ''})")


def lock_target(target: str, holder: dict[str, Any]) -> TargetLock:
    """Hold ``target`` for the life of this process (or until released); TargetBusy if held."""
    from docktor.tools.sdk import open_private, private_dir

    folder = private_dir(run_dir() / "targets", tighten=True)
    path = folder / f"{_key(target)}.lock"
    fd = open_private(path, os.O_RDWR, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            data = json.loads(os.pread(fd, 65536, 0) or b"{}")
        except (OSError, ValueError):
            data = {}
        os.close(fd)
        raise TargetBusy(target, data if isinstance(data, dict) else {}) from None
    body = json.dumps({"target": target, "pid": os.getpid(), **holder}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, body, 0)
    return TargetLock(target, fd)
