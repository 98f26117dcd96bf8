"""Where ``docktor mcp --http`` listens: loopback unless the config allows more.

The same conventions as ``metrics.listen``: ``host:port`` with an IP address or ``localhost``
(other host names are refused: what they resolve to would decide who can reach the server), a
bare port on 127.0.0.1, ``[::1]:port`` for IPv6, ``:port`` for every address. Port 0 takes any
free port (the server prints the URL it got).
"""

from __future__ import annotations

import ipaddress
import re

from docktor.agent.errors import Problem, UsageError

DEFAULT_HOST = "127.0.0.1"


def http_address(text: str, *, allow_remote: bool, allow_apply: bool) -> tuple[str, int]:
    """``(host, port)`` for ``--http TEXT``, or UsageError naming ``--http``."""
    def refuse(why: str) -> UsageError:
        return UsageError([Problem("--http", f"{why}, got {text!r}")])

    raw = text.strip()
    if raw.isdigit():
        host, port_text = DEFAULT_HOST, raw
    else:
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", raw)
        if m is None:
            raise refuse("must be host:port, e.g. 127.0.0.1:8765 or [::1]:8765")
        host = m.group(1) or m.group(3) or ""
        port_text = m.group(2) or m.group(4)
        host = {"": "0.0.0.0", "localhost": DEFAULT_HOST}.get(host, host)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise refuse("the host must be an IP address or localhost") from None
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise refuse("the port must be between 0 (any free port) and 65535")
    if not ip.is_loopback:
        if not allow_remote:
            raise refuse("not a loopback address: the MCP server would answer beyond this host, without "
                         "authentication (set mcp.allow_remote: true in the config if that is what you want)")
        if allow_apply:
            # Anyone who reaches the port could scale services: keep acting to this host, where the
            # socket's reach is the machine's users (or put an authenticating proxy in front).
            raise refuse("mcp.allow_apply is true: apply_scale is never served beyond this host, since the "
                         "transport has no authentication; listen on loopback (behind an authenticating proxy "
                         "if remote clients need it) or set allow_apply: false")
    return str(ip), port
