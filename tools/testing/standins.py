"""Stand-in peers for faults a real server cannot produce on demand, on loopback.

A real RabbitMQ or NATS server does not answer garbage, or accept a connection and then say
nothing, when a test asks it to. These small servers do exactly that, and nothing else, so the
contract suite (:mod:`docktor.tools.testing.contract`) can show that a plugin turns them into a
:class:`~docktor.tools.sdk.SourceError` within its timeout:

* :class:`SilentServer`: accepts every connection and never sends a byte (a hung peer);
* :class:`GarbageServer`: answers every connection, and every chunk it receives, with bytes no
  protocol accepts (for NATS, Redis, AMQP clients);
* :class:`GarbageHttpServer`: a valid HTTP response whose JSON body is garbage (for HTTP APIs);
* :func:`closed_port`: a loopback port nothing listens on (an unreachable peer).

Each serves from a daemon thread, so it works from synchronous fixtures and async tests alike;
use it as a context manager, or call :meth:`StandIn.close`.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

#: bytes that are no protocol's greeting or reply (not an INFO line, a RESP type byte, an AMQP frame)
GARBAGE = b"\x00\xff\xfe garbage \x01\x02\x03 \xc3\x28 not-a-protocol\r\n"
#: a body that is not JSON at all: cut off in the middle
BROKEN_JSON = b'{"name": "jobs", "messages_ready": [1, 2'


def closed_port() -> int:
    """A loopback TCP port nothing listens on right now: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandIn:
    """A loopback listener that hands each accepted connection to :meth:`serve` in a thread of its own."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept_forever, name=f"{type(self).__name__}:{self.port}", daemon=True).start()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, for settings that take a host and a port."""
        return f"127.0.0.1:{self.port}"

    def url(self, scheme: str, path: str = "") -> str:
        """``scheme://127.0.0.1:PORT/path``."""
        return f"{scheme}://{self.address}{path}"

    def serve(self, conn: socket.socket) -> None:
        """What to do with one connection (runs in its own thread); the base class holds it open."""

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for conn in list(self._connections):
            conn.close()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept_forever(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._connections.append(conn)
            threading.Thread(target=self._serve_quietly, args=(conn,), daemon=True).start()

    def _serve_quietly(self, conn: socket.socket) -> None:
        try:
            self.serve(conn)
        except OSError:
            pass  # the client went away: its story, not this server's


class SilentServer(StandIn):
    """Stand-in for a hung peer: accepts every connection, reads nothing, never answers."""


class GarbageServer(StandIn):
    """Stand-in for a peer speaking nonsense: :data:`GARBAGE` at once and after every chunk received."""

    def __init__(self, garbage: bytes = GARBAGE) -> None:
        self.garbage = garbage
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(self.garbage)
        while conn.recv(65536):
            conn.sendall(self.garbage)


class GarbageHttpServer(StandIn):
    """Stand-in for an HTTP API answering garbage: ``200 OK``, ``application/json``, and ``body``
    (by default JSON cut off in the middle) to every request, whatever its path or method."""

    def __init__(self, body: bytes = BROKEN_JSON, status: str = "200 OK") -> None:
        self.body = body
        self.status = status
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                return
            received += chunk
        head = (
            f"HTTP/1.1 {self.status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(self.body)}\r\nconnection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + self.body)
        conn.shutdown(socket.SHUT_WR)
