"""The ``/metrics`` endpoint: a small threaded HTTP server on the daemon's own registry.

At most :data:`MAX_CONCURRENT_SCRAPES` scrapes are served at once (a further connection is
closed: Prometheus retries next interval), each bounded by :data:`SCRAPE_TIMEOUT_S`, so a slow
or hostile client never holds a thread for long, and never delays a tick.
"""

from __future__ import annotations

import gzip
import http.server
import logging
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger("docktor")

#: scrapes served at once; a further connection is closed at once (Prometheus retries next interval)
MAX_CONCURRENT_SCRAPES = 4
#: a client that sends its request or reads the answer slower than this is dropped
SCRAPE_TIMEOUT_S = 10.0


class _Server(http.server.ThreadingHTTPServer):
    """A thread per scrape, at most :data:`MAX_CONCURRENT_SCRAPES` at once; more are turned away."""

    daemon_threads = True
    allow_reuse_address = True  # a restarted daemon gets its port back while old sockets linger
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT_SCRAPES)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # busy: Prometheus records a failed scrape and tries again
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr by default; a dropped client is not news
        log.debug("metrics: a request from %s failed", client_address, exc_info=True)


_INDEX = (b"<html><head><title>Docktor</title></head><body><h1>Docktor</h1>"
          b"<p><a href=\"/metrics\">/metrics</a></p></body></html>\n")


def _handler(registry: CollectorRegistry) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = SCRAPE_TIMEOUT_S  # per socket operation: a slow client frees its slot
        server_version = "docktor"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                try:
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    body = encoder(registry)
                except Exception as e:  # never the daemon's problem: this scrape fails, the next may not
                    log.warning("metrics: could not render /metrics: %s", e)
                    self._send(500, b"error rendering metrics\n", "text/plain; charset=utf-8")
                    return
                encoding = None
                if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                    body, encoding = gzip.compress(body, compresslevel=1), "gzip"
                self._send(200, body, content_type, encoding)
            elif path == "/":
                self._send(200, _INDEX, "text/html; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str, encoding: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the daemon's own log

    return Handler


class MetricsServer:
    """``/metrics`` on ``host:port``, served from daemon threads (they never keep the process alive)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry):
        self._server = _Server((host, port), _handler(registry))  # binds now: an error is the caller's
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="docktor-metrics", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
