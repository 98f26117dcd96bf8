"""The HTTP client of a plugin that reads an HTTP API (Prometheus, RabbitMQ's management API)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from docktor.tools.sdk.errors import reason
from docktor.tools.sdk.retry import Transient
from docktor.tools.sdk.settings import Context, TlsSettings

__all__ = ["http_client", "transport_errors"]


@contextmanager
def transport_errors(what: str, timeout: float) -> Iterator[None]:
    """Around one request to ``what`` (``"Prometheus at host:9090"``): no answer within
    ``timeout`` or no connection at all is a :class:`Transient` error in one line, retried by
    :func:`retrying`. The answer itself (its status, its body) is the caller's to judge."""
    try:
        yield
    except (TimeoutError, httpx2.TimeoutException):
        raise Transient(f"{what} timed out after {timeout:g}s") from None
    except (httpx2.HTTPError, ssl.SSLError, OSError) as e:
        raise Transient(f"cannot reach {what}: {reason(e)}") from None


def http_client(tls: TlsSettings | ssl.SSLContext | None, context: Context, timeout: float) -> httpx2.AsyncClient:
    """An async HTTP client whose every phase (connect, write, read, pool) is bounded by
    ``timeout``. It verifies the server's certificate, host name included (against
    ``tls.ca_file`` when given, presenting ``tls``'s client certificate), follows no redirect, and
    takes nothing from the environment (``trust_env=False``): no proxy or CA variable changes what
    is trusted or where a request goes. Raises :class:`SourceError` naming a TLS file that cannot
    be loaded. A plugin whose trust comes from elsewhere (a kubeconfig's CA) passes its own
    ``ssl.SSLContext`` instead of ``tls``."""
    verify: ssl.SSLContext | bool = tls.ssl_context(context) if isinstance(tls, TlsSettings) else (tls or True)
    return httpx2.AsyncClient(verify=verify, timeout=timeout, trust_env=False, follow_redirects=False)
