"""The HTTP client of a plugin that reads an HTTP API (Prometheus, RabbitMQ's management API)."""

from __future__ import annotations

import ssl

import httpx2

from docktor.tools.sdk.settings import Context, TlsSettings

__all__ = ["http_client"]


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
