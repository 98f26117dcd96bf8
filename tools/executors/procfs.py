"""What the local executor reads from Linux's ``/proc``: process identity, owner, environment,
sessions and CPU time.

A pid alone does not name a process across a daemon restart (pids are reused); the pair
(pid, start time in clock ticks since boot), within one boot (``boot_id``), does. Replicas run in
their own session (``start_new_session``), so "everything a replica started" is every process
whose session id is the replica's pid, unless one of them called ``setsid`` itself: those are
found by the marker in their environment (:func:`carrying`).

Everything here answers ``None`` (or nothing) where ``/proc`` is not there: other systems get
no adoption after a crash and no CPU-based choice at scale-in, and the docs say so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str  # R, S, D, Z (zombie), T ...
    ppid: int
    pgid: int
    sid: int
    #: user + system time of the process itself, and of its children it has reaped (ticks)
    cpu_ticks: int
    #: start time in clock ticks since boot: with the pid, the process's identity
    start_ticks: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def available() -> bool:
    return (PROC / "self" / "stat").exists()


def proc_info(pid: int) -> ProcInfo | None:
    """``/proc/<pid>/stat`` parsed, or None when there is no such process (or no /proc)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return _parse(pid, text)


def _parse(pid: int, text: str) -> ProcInfo | None:
    # the command name (field 2) is in parentheses and may itself contain spaces and parentheses
    try:
        rest = text.rsplit(")", 1)[1].split()
        return ProcInfo(
            pid=pid,
            state=rest[0],
            ppid=int(rest[1]),
            pgid=int(rest[2]),
            sid=int(rest[3]),
            cpu_ticks=int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
            start_ticks=int(rest[19]),
        )
    except (IndexError, ValueError):
        return None


def processes() -> Iterator[ProcInfo]:
    """Every process this user can see."""
    try:
        entries = os.listdir(PROC)
    except OSError:
        return
    for entry in entries:
        if entry.isdigit() and (info := proc_info(int(entry))) is not None:
            yield info


#: the last scan of /proc: (monotonic time it was made, every process)
_last_scan: tuple[float, tuple[ProcInfo, ...]] | None = None


def recent_scan(max_age: float) -> tuple[float, tuple[ProcInfo, ...]]:
    """Every process, from a scan of /proc at most ``max_age`` seconds old, and when it was made.

    A scan reads one file per process on the host, and the local executors of all services
    measure their replicas at the same instants (services tick on the same schedule): with ten
    services at a 1 s interval, a fresh scan for each was 40 % of the daemon's CPU. One scan
    serves them all; a process started since is simply not counted until the next one.
    """
    global _last_scan
    now = time.monotonic()
    if _last_scan is None or now - _last_scan[0] > max_age:
        _last_scan = (now, tuple(processes()))
    return _last_scan


def by_session(sids: set[int], scan: tuple[ProcInfo, ...] | None = None) -> dict[int, list[ProcInfo]]:
    """The live (non-zombie) processes of each of these sessions, from ``scan`` or a fresh one."""
    found: dict[int, list[ProcInfo]] = {sid: [] for sid in sids}
    if not sids:
        return found
    for p in processes() if scan is None else scan:
        if p.sid in found and not p.zombie:
            found[p.sid].append(p)
    return found


def same_process(pid: int, start_ticks: int) -> bool:
    """``pid`` is still the process that had this start time (and has not exited)."""
    info = proc_info(pid)
    return info is not None and info.start_ticks == start_ticks and not info.zombie


def boot_id() -> str | None:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None


def _environ(pid: int) -> list[bytes]:
    try:
        return (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def environ_has(pid: int, entry: str) -> bool:
    """The process's initial environment contains ``entry`` (``NAME=value``); False if unreadable."""
    return entry.encode() in _environ(pid)


def environ_value(pid: int, name: str) -> str | None:
    """``name``'s value in the process's initial environment, None when absent or unreadable."""
    prefix = name.encode() + b"="
    found = next((e for e in _environ(pid) if e.startswith(prefix)), None)
    return None if found is None else found[len(prefix):].decode(errors="replace")


def user_ids(pid: int) -> tuple[int, int] | None:
    """The real and effective user ids ``pid`` runs as (``/proc/<pid>/status``), None when gone."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except (OSError, ValueError):
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            real, effective = line.split()[1:3]
            return int(real), int(effective)
    return None


def carrying(entries: list[str], uid: int) -> list[ProcInfo]:
    """Every live process running as ``uid`` (real and effective) whose initial environment holds
    all of ``entries`` (``NAME=value``). The environment is read first: most processes are ruled
    out by it, or cannot be read at all (another user's), before their status is."""
    wanted = [e.encode() for e in entries]
    found = []
    for info in processes():
        if info.zombie:
            continue
        env = _environ(info.pid)
        if all(w in env for w in wanted) and user_ids(info.pid) == (uid, uid):
            found.append(info)
    return found
