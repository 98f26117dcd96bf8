"""The connections this process holds open, read from ``/proc`` (Linux): what ``close()`` must release.

A connection this process *accepted* (a stand-in server's, a scrape target's) belongs to the
server that listens, not to the plugin under test, so only sockets whose local port is not one
this process listens on count: the outgoing TCP connections, and connected Unix sockets (the
Docker engine's socket).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

_PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's hex states
_UNIX_LISTENING = 1 << 16  # __SO_ACCEPTCON in /proc/net/unix's flags


def connections() -> dict[int, str] | None:
    """Socket inode -> a description (``tcp 127.0.0.1:40120 -> 127.0.0.1:4222``), for every
    outgoing connection this process holds now; None where ``/proc`` cannot tell (not Linux)."""
    if not ((_PROC / "self" / "fd").is_dir() and (_PROC / "net" / "tcp").is_file()):
        return None
    return _held()


def _held() -> dict[int, str]:
    ours = _socket_inodes()
    tcp = [row for table in ("tcp", "tcp6") for row in _table(table)]
    listening = {_port(row[1]) for row in tcp if row[3] == _LISTEN and int(row[9]) in ours}
    out: dict[int, str] = {}
    for row in tcp:
        inode = int(row[9])
        if inode in ours and row[3] != _LISTEN and _port(row[1]) not in listening:
            out[inode] = f"tcp {_address(row[1])} -> {_address(row[2])}"
    for row in _table("unix"):
        inode = int(row[6])
        if inode in ours and not int(row[3], 16) & _UNIX_LISTENING and int(row[5], 16) == 3:  # 3: connected
            out[inode] = f"unix {row[7] if len(row) > 7 else '(unnamed)'}"
    return out


async def left_open(before: dict[int, str] | None, bound: float) -> dict[int, str]:
    """The connections opened since ``before`` (a :func:`connections`) that are still open once ``bound``
    seconds have passed: a request still in flight when ``close()`` returned may end on its own
    meanwhile (the connection is released then); one never closed stays. Empty without ``/proc``."""
    if before is None:
        return {}
    deadline = time.monotonic() + bound
    while True:
        left = {k: v for k, v in _held().items() if k not in before}
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(0.1)


def _socket_inodes() -> set[int]:
    found = set()
    fd_dir = _PROC / "self" / "fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _table(name: str) -> list[list[str]]:
    try:
        lines = (_PROC / "net" / name).read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split() for line in lines if line.strip()]


def _port(hex_address: str) -> int:
    return int(hex_address.rsplit(":", 1)[1], 16)


def _address(hex_address: str) -> str:
    host, port = hex_address.rsplit(":", 1)
    if len(host) == 8:  # IPv4, little-endian
        ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        ip = f"[{host}]"  # IPv6, as the kernel writes it: enough to tell connections apart
    return f"{ip}:{int(port, 16)}"
