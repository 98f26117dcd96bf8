"""The control channel: a Unix socket in ``state_dir`` that the CLI (and, later, ``docktor mcp``)
uses to talk to a running daemon.

The protocol (docs/operations.md, "The control channel") is one JSON object per line each way,
on a stream socket: a request ``{"v": 1, "id": "...", "cmd": "...", "args": {...}}`` gets one
response ``{"v": 1, "id": "...", "ok": true, "result": {...}}`` or ``{"v": 1, "id": "...",
"ok": false, "error": {"code": "...", "message": "one line", "problems": [...]}}``. A connection
may carry several requests, answered in order. Commands: ``ping``, ``status``, ``pause``,
``resume``, ``scale``, ``reload``.

The socket is created mode 0600 (only its owner, and root, may connect; the peer's uid is checked
too) and the daemon listens on nothing else. A path longer than a Unix socket address allows
(108 bytes) is reached through ``/proc/self/fd/<folder>/docktor.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("docktor")

PROTOCOL_VERSION = 1
#: a request line longer than this is refused (the connection is closed)
MAX_LINE = 64 * 1024
#: a connection that sends nothing for this long is closed
IDLE_TIMEOUT_S = 30.0
_SUN_PATH_MAX = 107


class ControlError(Exception):
    """The daemon answered with an error (``code``: ``bad_request``, ``unknown_service``,
    ``not_allowed``, ``invalid_config``, ``internal``); ``problems`` lists one line per problem."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or [message]


class ControlUnavailable(Exception):
    """Nobody answered on the socket (no daemon, a stuck one, or a socket of another user)."""


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A path ``bind``/``connect`` accept: ``path`` itself, or through ``/proc/self/fd`` when too long."""
    if len(os.fsencode(str(path))) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the server

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """Listens on ``path``; each request goes to ``handler(cmd, args)``, which returns the result
    or raises :class:`ControlError`."""

    def __init__(self, path: Path, handler: Handler):
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(self.path) as addr:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr)  # a previous daemon's (we hold the config's lock: none runs)
                old = os.umask(0o177)  # created 0600: nobody else may even connect
                try:
                    sock.bind(addr)
                finally:
                    os.umask(old)
                os.chmod(addr, 0o600)
            sock.listen(16)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            raise

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(OSError), _address(self.path) as addr:
            os.unlink(addr)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if not _peer_allowed(writer):
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (TimeoutError, ValueError, ConnectionError):  # ValueError: a line over the limit
                    return
                if not line:
                    return
                response = await self._answer(line)
                writer.write((json.dumps(response, separators=(",", ":")) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        rid: Any = None
        try:
            try:
                req = json.loads(line)
            except ValueError:
                raise ControlError("bad_request", "not a JSON object") from None
            if not isinstance(req, dict):
                raise ControlError("bad_request", "not a JSON object")
            rid = req.get("id")
            if req.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
                raise ControlError("bad_request", f"protocol version {req.get('v')!r} not supported (this daemon speaks {PROTOCOL_VERSION})")
            cmd, args = req.get("cmd"), req.get("args") or {}
            if not isinstance(cmd, str) or not isinstance(args, dict):
                raise ControlError("bad_request", "cmd must be a string and args an object")
            result = await self.handler(cmd, args)
            return {"v": PROTOCOL_VERSION, "id": rid, "ok": True, "result": result}
        except ControlError as e:
            return {"v": PROTOCOL_VERSION, "id": rid, "ok": False,
                    "error": {"code": e.code, "message": e.message, "problems": e.problems}}
        except Exception as e:  # a bug answering one request never takes the daemon down
            log.exception("control request failed: %s", e)
            return {"v": PROTOCOL_VERSION, "id": rid, "ok": False,
                    "error": {"code": "internal", "message": f"internal error: {type(e).__name__}: {e}", "problems": []}}


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    """Only our own user (and root) may talk to us, whatever the socket's mode says."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return False
    if uid not in (os.getuid(), 0):
        log.warning("control socket: refused a connection from uid %d", uid)
        return False
    return True


# --------------------------------------------------------------------------- the clients


def _request(cmd: str, args: dict[str, Any]) -> tuple[str, bytes]:
    rid = uuid.uuid4().hex[:12]
    return rid, (json.dumps({"v": PROTOCOL_VERSION, "id": rid, "cmd": cmd, "args": args}, separators=(",", ":")) + "\n").encode()


def _result(rid: str, line: bytes) -> dict[str, Any]:
    if not line:
        raise ControlUnavailable("the daemon closed the connection without answering")
    try:
        resp = json.loads(line)
    except ValueError:
        raise ControlUnavailable("the daemon answered something that is not JSON") from None
    if not isinstance(resp, dict) or resp.get("id") != rid:
        raise ControlUnavailable("the daemon's answer does not match the request")
    if not resp.get("ok"):
        err = resp.get("error") or {}
        raise ControlError(str(err.get("code", "internal")), str(err.get("message", "error")), list(err.get("problems") or []))
    result = resp.get("result")
    return result if isinstance(result, dict) else {}


class _Commands:
    """The commands, for both clients (``call`` is sync in one, async in the other)."""

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> Any:
        raise NotImplementedError

    def ping(self) -> Any:
        return self.call("ping")

    def status(self) -> Any:
        """What ``docktor daemon status --json`` shows, live."""
        return self.call("status")

    def pause(self, service: str, for_s: float | None = None, reason: str = "") -> Any:
        """Stop acting on ``service`` (for ``for_s`` seconds, or until resumed); decisions go on
        and are logged with ``paused``."""
        return self.call("pause", service=service, for_s=for_s, reason=reason)

    def resume(self, service: str) -> Any:
        return self.call("resume", service=service)

    def scale(self, service: str, replicas: int, reason: str = "", source: str = "manual", dry_run: bool = False,
              timeout: float = 300.0) -> Any:
        """Ask for ``replicas``. ``source="manual"``: clamped by min/max only (an operator's
        override); ``source="mcp"``: through the guardrails' whole envelope, as the LLM's
        proposals are. ``dry_run``: what would be executed, and why, without acting or recording.
        Returns ``{"record": <the decision, as the log has it>}``."""
        return self.call("scale", timeout=timeout, service=service, replicas=replicas, reason=reason, source=source, dry_run=dry_run)

    def reload(self, timeout: float = 120.0) -> Any:
        """Re-read and validate the config; a bad one raises ControlError(``invalid_config``)."""
        return self.call("reload", timeout=timeout)


class ControlClient(_Commands):
    """A blocking client: ``ControlClient(state_dir / "docktor.sock").status()``."""

    def __init__(self, path: Path, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        rid, data = _request(cmd, args)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout or self.timeout)
        try:
            with _address(self.path) as addr:
                sock.connect(addr)
            sock.sendall(data)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            raise ControlUnavailable(f"no answer on {self.path} within {timeout or self.timeout:g} s") from None
        except OSError as e:
            raise ControlUnavailable(f"cannot reach {self.path}: {e.strerror or e}") from None
        finally:
            sock.close()
        return _result(rid, buf)


class AsyncControlClient(_Commands):
    """The same, for asyncio (``await AsyncControlClient(path).scale("worker", 3, source="mcp")``)."""

    def __init__(self, path: Path, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout

    async def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        rid, data = _request(cmd, args)
        wait = timeout or self.timeout
        writer = None
        try:
            async with asyncio.timeout(wait):
                with _address(self.path) as addr:
                    reader, writer = await asyncio.open_unix_connection(addr, limit=16 * MAX_LINE)
                writer.write(data)
                await writer.drain()
                line = await reader.readline()
        except TimeoutError:
            raise ControlUnavailable(f"no answer on {self.path} within {wait:g} s") from None
        except OSError as e:
            raise ControlUnavailable(f"cannot reach {self.path}: {e.strerror or e}") from None
        finally:
            if writer is not None:
                writer.close()
        return _result(rid, line)
