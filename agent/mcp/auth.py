"""The HTTP transport's bearer token: where ``docktor mcp --http`` finds it, and the check on every request.

The daemon's control socket is reachable only by its user (0600, peer-uid check); a TCP port on
loopback is reachable by every local user. So over HTTP every request to the MCP app carries
``Authorization: Bearer <token>`` (RFC 6750), unless ``mcp.http_auth: none`` (read-only tools
behind a trusted proxy; the config refuses it with ``allow_apply``). The token is, in order:

1. the environment variable ``mcp.token_env`` names (``DOCKTOR_MCP_TOKEN``), when set;
2. the file ``mcp.token_file`` (``<state_dir>/mcp.token``), when present: it must be a regular
   file of this user, mode 0600, not a link (:func:`docktor.tools.sdk.read_private`), else the
   start is refused with one line;
3. else a new random one, written 0600 to that file and printed once on stderr; later starts
   read the file silently. Deleting the file rotates the token at the next start.

The token is registered with :mod:`docktor.agent.redact`: no log line, error or answer shows it.
It is compared in constant time and never logged, nor is the header that carries it.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docktor.agent.config.model import DEFAULT_MCP_TOKEN_FILE, DocktorConfig
from docktor.agent.problems import Problem, UsageError
from docktor.agent.redact import register
from docktor.tools.sdk import UnsafePath, private_dir, read_private, write_atomic

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("docktor.mcp")

#: shorter than this is guessable; the generated ones have 43 characters (32 random bytes)
MIN_TOKEN_CHARS = 16
#: what an HTTP header carries and a client config holds without quoting: visible ASCII, no spaces
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
#: a refused request is logged at most this often (a local user could send thousands)
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class Token:
    value: str
    #: where it came from, for the start line: "$DOCKTOR_MCP_TOKEN" or the file's path
    origin: str


def token_path(config: DocktorConfig) -> Path:
    """``mcp.token_file`` (relative to the config's folder), else ``<state_dir>/mcp.token``."""
    if config.mcp.token_file is not None:
        return config.base_dir / config.mcp.token_file  # an absolute token_file stays as it is
    assert config.state_dir is not None  # the loader always resolves it
    return config.state_dir / DEFAULT_MCP_TOKEN_FILE


def resolve_token(config: DocktorConfig, env: Mapping[str, str]) -> Token | None:
    """The token every HTTP request must carry, or None with ``http_auth: none``. Raises
    :class:`UsageError` (one line naming the field, exit 2) for a token that cannot be trusted."""
    if config.mcp.http_auth == "none":
        return None
    name = config.mcp.token_env
    if name in env:
        return Token(_checked(env[name], "mcp.token_env", f"environment variable {name}"), f"${name}")
    path = token_path(config)
    try:
        private_dir(path.parent, what="the token file's folder")
        found = _read(path)
    except UnsafePath as e:
        raise UsageError([Problem("mcp.token_file", str(e))]) from None
    if found is not None:
        return Token(_checked(found, "mcp.token_file", str(path)), str(path))
    token = secrets.token_urlsafe(32)
    register(token)
    try:
        write_atomic(path, (token + "\n").encode())
    except OSError as e:
        raise UsageError([Problem("mcp.token_file", f"cannot write a new token to {path}: {e.strerror or e}; "
                                  f"set one in the environment variable {name} instead")]) from None
    # print(), not the log: this one line is the only place the token is ever shown
    print(f"docktor mcp: generated a bearer token for HTTP clients and saved it in {path} (0600; delete the file "
          f"to have a new one made at the next start); clients send 'Authorization: Bearer <token>'; "
          f"shown only this once: {token}", file=sys.stderr, flush=True)
    return Token(token, str(path))


def _read(path: Path) -> str | None:
    """The token file's text, None when absent. A file others may read is refused, not tightened
    as :func:`read_private` would: the token in it may already be known to them."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise UnsafePath(f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}): the token in it "
                         "may be known to them; delete it (a new one is made at the next start) or set the token "
                         "in the environment")
    data = read_private(path)  # a link, another user's file, or one others can write: refused
    if data is None:
        return None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UnsafePath(f"{path} is not text: delete it (a new token is made at the next start)") from None


def _checked(token: str, field: str, where: str) -> str:
    token = token.strip()
    if not _TOKEN_CHARS.fullmatch(token):
        raise UsageError([Problem(field, f"{where} must hold one token of visible ASCII characters, without spaces"
                                  + (" (it is empty)" if not token else ""))])
    register(token)  # before any message could show it
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError([Problem(field, f"{where} holds a token of fewer than {MIN_TOKEN_CHARS} characters: use a "
                                  "random one, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")])
    return token


class RequireBearer:
    """ASGI middleware: a request reaches ``app`` only with ``Authorization: Bearer <token>``;
    others get 401 with ``WWW-Authenticate: Bearer`` and nothing else (RFC 6750). Lifespan events
    pass through: they are the server's own."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self._expected = token.encode()
        self._refused = 0
        self._logged_at = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        why = self._why_refused(scope)
        if why is None:
            await self.app(scope, receive, send)
            return
        self._note(scope, why)
        if scope["type"] != "http":  # a websocket: closed before it is accepted
            await send({"type": "websocket.close", "code": 1008})
            return
        challenge = 'Bearer realm="docktor mcp"' + ('' if why == "no token" else ', error="invalid_token"')
        body = (b'{"error": "unauthorized", "error_description": "send Authorization: Bearer <token> '
                b'(docktor mcp --http says where its token is; docs/operations.md, MCP)"}')
        start: Message = {"type": "http.response.start", "status": 401, "headers": [
            (b"www-authenticate", challenge.encode()), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
        ]}
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def _why_refused(self, scope: Scope) -> str | None:
        given = [value for name, value in scope.get("headers") or [] if name.lower() == b"authorization"]
        if not given:
            return "no token"
        if len(given) > 1:
            return "more than one Authorization header"
        scheme, _, credentials = given[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return "not a bearer token"
        # constant time: how much of the token a guess got right must not show in the answer's timing
        return None if hmac.compare_digest(credentials.strip(), self._expected) else "wrong token"

    def _note(self, scope: Scope, why: str) -> None:
        """A warning now and then (never the header nor the token): the operator sees a client
        without the token, a local user cannot flood the log."""
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            client = scope.get("client") or ("?", 0)
            log.warning("refused %d HTTP request%s without a valid bearer token (last: %s, from %s:%s)",
                        self._refused, "s" if self._refused > 1 else "", why, client[0], client[1])
            self._refused, self._logged_at = 0, now
