"""Where ``docktor mcp --http`` listens: loopback unless the config allows more.

The same conventions as ``metrics.listen``: ``host:port`` with an IP address or ``localhost``
(other host names are refused: what they resolve to would decide who can reach the server), a
bare port on 127.0.0.1, ``[::1]:port`` for IPv6, ``:port`` for every address. Port 0 takes any
free port (the server prints the URL it got).
"""

from __future__ import annotations

import ipaddress

from docktor.agent.config.model import split_listen
from docktor.agent.problems import Problem, UsageError


def http_address(text: str, *, allow_remote: bool, allow_apply: bool) -> tuple[str, int]:
    """``(host, port)`` for ``--http TEXT``, or UsageError naming ``--http``."""
    def refuse(why: str) -> UsageError:
        return UsageError([Problem("--http", f"{why}, got {text!r}")])

    try:
        host, port = split_listen(text, example="127.0.0.1:8765", lowest_port=0)
    except ValueError as e:
        raise refuse(str(e)) from None
    ip = ipaddress.ip_address(host)
    if not ip.is_loopback:
        if not allow_remote:
            raise refuse("not a loopback address: the MCP server would answer beyond this host, over plain HTTP "
                         "(set mcp.allow_remote: true in the config if that is what you want)")
        if allow_apply:
            # Plain HTTP carries the bearer token in clear: whoever sees the traffic could replay it
            # and scale. Keep acting to this host (or put a TLS-terminating proxy in front).
            raise refuse("mcp.allow_apply is true: apply_scale is never served beyond this host, since plain HTTP "
                         "shows its bearer token to anyone on the network path; listen on loopback (behind a TLS "
                         "proxy if remote clients need it) or set allow_apply: false")
    return str(ip), port
