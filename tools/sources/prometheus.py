"""Prometheus metric source: instant PromQL queries, each mapped to a metric name.

```yaml
queue:
  kind: prometheus
  url: http://127.0.0.1:9090
  queries:
    queue.backlog: sum(rabbitmq_queue_messages{queue="jobs"})
    latency.p95: histogram_quantile(0.95, sum by (le) (rate(job_seconds_bucket[1m])))
    temperature.delta: {query: 'delta(room_celsius[10m])', signed: true}
```

Each query must give exactly one number. A query that matches no series, matches several (and is
not aggregated), or gives NaN/Inf leaves its metric *missing*, never zero: the decision log says
why. A number below 0 is missing too (the daemon's :func:`admit`), unless the query declares
itself ``signed``: a backlog of -50 is a broken reading, not an empty queue. Prometheus itself drops a series from instant queries once its target stops answering
(staleness markers, written on the first failed scrape) or after five minutes without samples,
so a stale figure shows up here as "no sample". Rates are whatever the query computes (e.g.
``sum(rate(jobs_done_total[1m]))``): this source keeps no state between reads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx2
from pydantic import BaseModel, BeforeValidator, ConfigDict, field_serializer, field_validator, model_validator

from docktor.tools.sdk.errors import SourceError, redact_url
from docktor.tools.sdk.http_client import http_client, transport_errors
from docktor.tools.sdk.metric_info import STANDARD_METRICS, MetricInfo, Metrics
from docktor.tools.sdk.plugin import Source
from docktor.tools.sdk.retry import Permanent, Transient, retrying
from docktor.tools.sdk.settings import Context, EnvName, PluginSettings, PositiveSeconds, TlsSettings, env_secret, go_together
from docktor.tools.sdk.urls import url_setting

log = logging.getLogger("docktor.prometheus")

_METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)+$")
#: names the daemon fills from the executor: a query may not pose as one
_RESERVED_PREFIXES = ("replicas.",)


def _query_or_text(value: Any) -> Any:
    """A query written as its PromQL alone (the common, older form) is a query with defaults."""
    if isinstance(value, str):
        return {"query": value}
    if not isinstance(value, dict):
        raise ValueError("must be a PromQL query, or {query: <PromQL>, signed: true}")
    return value


class PrometheusQuery(BaseModel):
    """One entry of ``queries:``: ``name: <PromQL>``, or ``name: {query: <PromQL>, signed: true}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: an instant query giving one number
    query: str
    #: the number may be below 0 (a difference, a trend, a balance); without it a negative answer
    #: is a broken reading and the metric is missing that tick
    signed: bool = False


class PrometheusSettings(PluginSettings):
    """The block of a source with ``kind: prometheus``."""

    kind: Literal["prometheus"]
    #: the server (or a path prefix behind a proxy), ``http(s)://host:9090``; no credentials
    url: Annotated[str, url_setting(("http", "https"), "an http(s) URL such as http://127.0.0.1:9090")] = "http://127.0.0.1:9090"
    #: metric name -> instant PromQL query giving one number (or ``{query, signed}``)
    queries: dict[str, Annotated[PrometheusQuery, BeforeValidator(_query_or_text)]]
    #: bound of each request; also sent to Prometheus as the query's own timeout
    timeout: PositiveSeconds = 2.0
    #: names of environment variables: a bearer token, or a basic-auth user and password
    bearer_token_env: EnvName | None = None
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    tls: TlsSettings | None = None

    @model_validator(mode="after")
    def _check_auth(self) -> PrometheusSettings:
        if self.bearer_token_env is not None and self.username_env is not None:
            raise ValueError("use bearer_token_env or username_env/password_env, not both")
        go_together(self, "username_env", "password_env")
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError("tls: needs an https:// url")
        return self

    def request_auth(self) -> tuple[dict[str, str], Any]:
        """Headers and httpx auth for a request (the secrets read from the environment now);
        also used by ``docktor bench --from-prometheus`` for a URL this source names."""
        if self.bearer_token_env is not None:
            return {"authorization": f"Bearer {env_secret(self.bearer_token_env, 'bearer_token_env')}"}, None
        if self.username_env is not None and self.password_env is not None:
            return {}, (env_secret(self.username_env, "username_env"), env_secret(self.password_env, "password_env"))
        return {}, None

    def who(self) -> str:
        """Whose request Prometheus refused, for the error (the variable's name, never its value)."""
        if self.bearer_token_env:
            return f"the token in {self.bearer_token_env}"
        if self.username_env:
            return f"the user in {self.username_env}"
        return "a request without credentials (set bearer_token_env or username_env/password_env)"

    @field_validator("queries")
    @classmethod
    def _check_queries(cls, value: dict[str, PrometheusQuery]) -> dict[str, PrometheusQuery]:
        if not value:
            raise ValueError("map at least one metric name to a query, e.g. queue.backlog: sum(my_queue_depth)")
        for name, q in value.items():
            if not _METRIC_NAME.match(name):
                raise ValueError(f"{name!r} is not a metric name (dotted lower case, e.g. queue.backlog or latency.p95)")
            if name.startswith(_RESERVED_PREFIXES):
                raise ValueError(f"{name!r}: replicas.* come from the executor")
            if not q.query.strip():
                raise ValueError(f"{name}: empty query")
            if q.signed and name in STANDARD_METRICS:
                raise ValueError(f"{name}: a standard metric ({STANDARD_METRICS[name].unit}) is never below 0; give a signed query a name of its own")
        return value

    @field_serializer("queries")
    def _dump_queries(self, value: dict[str, PrometheusQuery]) -> dict[str, Any]:
        # a plain query dumps as its text, as before signed existed: the source's fingerprint in a
        # state file is unchanged by the upgrade
        return {name: q.model_dump() if q.signed else q.query for name, q in value.items()}


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
            name: STANDARD_METRICS.get(name) or MetricInfo("", f"PromQL: {q.query}", signed=q.signed)
            for name, q in settings.queries.items()
        }

    @classmethod
    def describe(cls, settings: PrometheusSettings) -> str:
        return f"prometheus {redact_url(settings.url)} ({', '.join(settings.queries)})"

    async def read(self) -> Metrics:
        s = self.settings
        results = await retrying(self._read_all, deadline=s.timeout)
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
        s = self.settings
        client, headers, auth = self._client(), *s.request_auth()
        try:
            async with asyncio.timeout(s.timeout + 0.5):  # httpx2 bounds each phase; this bounds the lot
                return list(await asyncio.gather(*(self._query(client, q.query, headers, auth) for q in s.queries.values())))
        except TimeoutError:
            raise Transient(f"Prometheus at {redact_url(s.url)} timed out") from None

    async def _query(self, client: httpx2.AsyncClient, query: str, headers: dict[str, str], auth: Any) -> float | str:
        """The query's number, or why it has none; raises when the server itself cannot answer."""
        s = self.settings
        where = redact_url(s.url)
        with transport_errors(f"Prometheus at {where}", s.timeout):
            # POST: long queries do not hit URL length limits
            r = await client.post(
                f"{s.url}/api/v1/query", data={"query": query, "timeout": f"{s.timeout:g}s"}, headers=headers, auth=auth
            )
        if r.status_code in (401, 403):
            raise Permanent(f"Prometheus at {where} refused {s.who()}: HTTP {r.status_code}")
        if r.status_code in (400, 422):  # the query itself is wrong (or cannot be executed)
            return f"Prometheus rejected the query: {_api_error(r)}"
        if r.status_code != 200:
            raise Transient(f"Prometheus at {where}: HTTP {r.status_code}{_detail(r)}")
        try:
            body = r.json()
            data = body["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError):
            raise Transient(f"Prometheus at {where}: not a query API answer") from None
        return _one_number(kind, result)

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = http_client(self.settings.tls, self.context, self.settings.timeout)
        return self._http



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

