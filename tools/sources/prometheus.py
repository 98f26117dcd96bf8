"""Prometheus metric source: instant PromQL queries, each mapped to a metric name.

```yaml
queue:
  kind: prometheus
  url: http://127.0.0.1:9090
  queries:
    queue.backlog: sum(rabbitmq_queue_messages{queue="jobs"})
    latency.p95: histogram_quantile(0.95, sum by (le) (rate(job_seconds_bucket[1m])))
```

Each query must give exactly one number. A query that matches no series, matches several (and is
not aggregated), or gives NaN/Inf leaves its metric *missing*, never zero: the decision log says
why. Prometheus itself drops a series from instant queries once its target stops answering
(staleness markers, written on the first failed scrape) or after five minutes without samples,
so a stale figure shows up here as "no sample". Rates are whatever the query computes (e.g.
``sum(rate(jobs_done_total[1m]))``): this source keeps no state between reads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx2
from pydantic import field_validator, model_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from docktor.tools.sdk import (
    STANDARD_METRICS,
    Context,
    EnvName,
    MetricInfo,
    Metrics,
    PluginSettings,
    PositiveSeconds,
    Source,
    SourceError,
    TlsSettings,
    env_secret,
    redact_url,
)

log = logging.getLogger("docktor.prometheus")

_ATTEMPTS = 3
_WAIT = wait_exponential(multiplier=0.1, max=0.5)
_METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)+$")
#: names the daemon fills from the executor: a query may not pose as one
_RESERVED_PREFIXES = ("replicas.",)


class PrometheusSettings(PluginSettings):
    """The block of a source with ``kind: prometheus``."""

    kind: Literal["prometheus"]
    #: the server (or a path prefix behind a proxy), ``http(s)://host:9090``; no credentials
    url: str = "http://127.0.0.1:9090"
    #: metric name -> instant PromQL query giving one number
    queries: dict[str, str]
    #: bound of each request; also sent to Prometheus as the query's own timeout
    timeout: PositiveSeconds = 2.0
    #: names of environment variables: a bearer token, or a basic-auth user and password
    bearer_token_env: EnvName | None = None
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:9090")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL; use bearer_token_env or username_env/password_env")
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment in the URL")
        return value.rstrip("/")

    @field_validator("queries")
    @classmethod
    def _check_queries(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("map at least one metric name to a query, e.g. queue.backlog: sum(my_queue_depth)")
        for name, query in value.items():
            if not _METRIC_NAME.match(name):
                raise ValueError(f"{name!r} is not a metric name (dotted lower case, e.g. queue.backlog or latency.p95)")
            if name.startswith(_RESERVED_PREFIXES):
                raise ValueError(f"{name!r}: replicas.* come from the executor")
            if not query.strip():
                raise ValueError(f"{name}: empty query")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> PrometheusSettings:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        if self.bearer_token_env is not None and self.username_env is not None:
            raise ValueError("use bearer_token_env or username_env/password_env, not both")
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls: needs an https:// url")
        return self


class _Transient(Exception):
    """The server could not answer; another attempt may fix it."""


class _Permanent(Exception):
    """Retrying cannot fix it (credentials refused, a setting wrong)."""


class PrometheusSource(Source[PrometheusSettings]):
    """One number per configured PromQL query."""

    Settings = PrometheusSettings

    def __init__(self, settings: PrometheusSettings, context: Context | None = None) -> None:
        super().__init__(settings, context or Context(service="", base_dir=Path.cwd(), state_dir=Path.cwd()))
        self._http: httpx2.AsyncClient | None = None
        #: metric -> why it is missing from the latest reading
        self.last_missing: dict[str, str] = {}

    @classmethod
    def metrics_for(cls, settings: PrometheusSettings) -> Mapping[str, MetricInfo]:
        return {
            name: STANDARD_METRICS.get(name) or MetricInfo("", f"PromQL: {query}") for name, query in settings.queries.items()
        }

    @classmethod
    def describe(cls, settings: PrometheusSettings) -> str:
        return f"prometheus {redact_url(settings.url)} ({', '.join(settings.queries)})"

    @classmethod
    def check(cls, settings: PrometheusSettings, context: Context) -> list[str]:
        return settings.tls.missing(context) if settings.tls else []

    async def read(self) -> Metrics:
        s = self.settings
        results = await self._retrying(self._read_all)
        out: Metrics = {}
        missing: dict[str, str] = {}
        for name, result in zip(s.queries, results, strict=True):
            if isinstance(result, float):
                out[name] = result
            else:
                missing[name] = result
        for name, why in missing.items():
            if self.last_missing.get(name) != why:  # once per change, not every tick
                log.warning("%s is missing: %s", name, why)
        self.last_missing = missing
        if not out:
            raise SourceError("no query gave a value: " + "; ".join(f"{n}: {w}" for n, w in missing.items()))
        return out

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    # ------------------------------------------------------------------ requests

    async def _read_all(self) -> list[float | str]:
        client, headers, auth = self._client(), *self._auth()
        async with asyncio.timeout(self.settings.timeout + 0.5):  # httpx2 bounds each phase; this bounds the lot
            tasks = [self._query(client, query, headers, auth) for query in self.settings.queries.values()]
            return list(await asyncio.gather(*tasks))

    async def _query(self, client: httpx2.AsyncClient, query: str, headers: dict[str, str], auth: Any) -> float | str:
        """The query's number, or why it has none; raises when the server itself cannot answer."""
        s = self.settings
        where = redact_url(s.url)
        try:
            # POST: long queries do not hit URL length limits
            r = await client.post(
                f"{s.url}/api/v1/query", data={"query": query, "timeout": f"{s.timeout:g}s"}, headers=headers, auth=auth
            )
        except httpx2.TimeoutException:
            raise _Transient(f"Prometheus at {where} timed out after {s.timeout:g}s") from None
        except (httpx2.HTTPError, ssl.SSLError, OSError) as e:
            raise _Transient(f"cannot reach Prometheus at {where}: {_reason(e)}") from None
        if r.status_code in (401, 403):
            raise _Permanent(f"Prometheus at {where} refused {self._who()}: HTTP {r.status_code}")
        if r.status_code in (400, 422):  # the query itself is wrong (or cannot be executed)
            return f"Prometheus rejected the query: {_api_error(r)}"
        if r.status_code != 200:
            raise _Transient(f"Prometheus at {where}: HTTP {r.status_code}{_detail(r)}")
        try:
            body = r.json()
            data = body["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError):
            raise _Transient(f"Prometheus at {where}: not a query API answer") from None
        return _one_number(kind, result)

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            s = self.settings
            try:
                verify: Any = s.tls.ssl_context(self.context) if s.tls is not None else True
            except SourceError as e:
                raise _Permanent(str(e)) from None
            # trust_env=False: no proxy or CA variables from the environment change what is trusted
            self._http = httpx2.AsyncClient(verify=verify, timeout=s.timeout, trust_env=False, follow_redirects=False)
        return self._http

    def _auth(self) -> tuple[dict[str, str], Any]:
        s = self.settings
        try:
            if s.bearer_token_env is not None:
                return {"authorization": f"Bearer {env_secret(s.bearer_token_env, 'bearer_token_env')}"}, None
            if s.username_env is not None and s.password_env is not None:
                return {}, (env_secret(s.username_env, "username_env"), env_secret(s.password_env, "password_env"))
        except SourceError as e:
            raise _Permanent(str(e)) from None
        return {}, None

    def _who(self) -> str:
        s = self.settings
        if s.bearer_token_env:
            return f"the token in {s.bearer_token_env}"
        if s.username_env:
            return f"the user in {s.username_env}"
        return "a request without credentials (set bearer_token_env or username_env/password_env)"

    async def _retrying(self, attempt_fn: Callable[[], Awaitable[Any]]) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(_ATTEMPTS) | stop_after_delay(self.settings.timeout),
            wait=_WAIT,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await attempt_fn()
                    except TimeoutError:
                        raise _Transient(f"Prometheus at {redact_url(self.settings.url)} timed out") from None
        except (_Permanent, _Transient) as e:
            raise SourceError(str(e)) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _one_number(kind: Any, result: Any) -> float | str:
    """The single number of an instant query's result, or why there is none."""
    if kind == "scalar":
        return _finite(result[1] if isinstance(result, list) and len(result) == 2 else None)
    if kind != "vector" or not isinstance(result, list):
        return f"the query gives a {kind}, not one number (an instant vector or scalar)"
    if not result:
        return "no sample (the query matched no series, or only stale ones)"
    if len(result) > 1:
        return f"{len(result)} series, not one: aggregate them (sum, max, ...)"
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    return _finite(sample[1] if isinstance(sample, list) and len(sample) == 2 else None)


def _finite(raw: Any) -> float | str:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return f"not a number: {str(raw)[:40]!r}"
    return value if math.isfinite(value) else f"not a finite number ({raw})"


def _api_error(r: httpx2.Response) -> str:
    try:
        return str(r.json().get("error", f"HTTP {r.status_code}"))[:300]
    except ValueError:
        return f"HTTP {r.status_code}"


def _detail(r: httpx2.Response) -> str:
    try:
        error = r.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" ({str(error)[:200]})" if error else ""


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return redact_url(text[0]) if text and text[0] else type(e).__name__
