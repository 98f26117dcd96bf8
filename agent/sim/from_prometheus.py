"""``docktor bench --from-prometheus URL --query 'sum(rate(...))'``: a load rebuilt from a rate series.

One range query (``/api/v1/query_range``) over the window ``--since`` gives the arrival rate,
one point per step; each step's arrivals (rate x step) are spread evenly over its seconds. A
rate series says nothing of the service, so the service time comes from the config's
``processing_time`` (or ``--service-ms``), and start-up, SLO and bounds from the config as for
``--from-log``; nothing says what the daemon did, so there is no logged row to compare.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx2

from docktor.agent.config.model import DocktorConfig, ServiceConfig
from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.from_log import Rebuilt, spread
from docktor.agent.sim.simulator import Scenario
from docktor.tools.sdk import SourceError
from docktor.tools.sdk.errors import redact_url
from docktor.tools.sdk.http_client import http_client, transport_errors
from docktor.tools.sdk.retry import Permanent, Transient, retrying
from docktor.tools.sdk.settings import Context
from docktor.tools.sources.prometheus import PrometheusSettings

#: Prometheus answers at most this many points per series
MAX_POINTS = 11_000
#: the bound on each request (and on the retries' deadline)
TIMEOUT_S = 10.0


def access_for(url: str, config: DocktorConfig, first: str) -> tuple[PrometheusSettings | None, str]:
    """The credentials and TLS of a ``kind: prometheus`` source in ``config`` that reads this URL
    (service ``first``'s own before the others'), and where they came from, for the report."""
    wanted = url.rstrip("/")
    for svc in sorted(config.services, key=lambda s: s.name != first):
        for spec in svc.sources:
            if isinstance(spec.settings, PrometheusSettings) and spec.settings.url.rstrip("/") == wanted:
                s = spec.settings
                how = (f"bearer_token_env {s.bearer_token_env}" if s.bearer_token_env else
                       f"username_env {s.username_env}" if s.username_env else "no credentials")
                return s, f"access: as {svc.name}'s source {spec.name} reads it ({how}{', tls' if s.tls else ''})"
    return None, "access: no credentials (no prometheus source in the config reads this URL)"


def fetch_series(url: str, query: str, start: float, end: float, step: float,
                 access: PrometheusSettings | None = None) -> list[tuple[float, float | None]]:
    """``(time, value)`` per step from ``start`` to ``end``; None where the series has no sample.
    ``access``: the credentials and TLS of the config's source that reads this URL (:func:`access_for`)."""
    try:
        values = asyncio.run(_fetch(url.rstrip("/"), query, start, end, step, access))
    except Permanent as e:
        raise UsageError([Problem("--query" if "rejected the query" in str(e) else "--from-prometheus", str(e))]) from None
    except SourceError as e:
        raise UsageError([Problem("--from-prometheus", str(e))]) from None
    have = {round(t, 3): v for t, v in values}
    out: list[tuple[float, float | None]] = []
    for k in range(int(math.floor((end - start) / step + 1e-9)) + 1):
        t = round(start + k * step, 3)
        out.append((t, have.get(t)))
    return out


async def _fetch(url: str, query: str, start: float, end: float, step: float,
                 access: PrometheusSettings | None) -> list[tuple[float, float]]:
    where = redact_url(url)
    headers: dict[str, str] = {}
    auth: Any = None  # httpx's default: none
    if access is not None:
        headers, auth = access.request_auth()
    client = http_client(None if access is None else access.tls,
                         Context(service="bench", base_dir=Path.cwd(), state_dir=Path.cwd()), TIMEOUT_S)

    async def attempt() -> Any:
        with transport_errors(f"Prometheus at {where}", TIMEOUT_S):
            r = await client.post(f"{url}/api/v1/query_range", headers=headers, auth=auth,
                                  data={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        if r.status_code in (400, 422):
            raise Permanent(f"Prometheus rejected the query: {_error(r)}")
        if r.status_code in (401, 403):
            if access is not None:
                raise Permanent(f"Prometheus at {where} refused {access.who()}: HTTP {r.status_code}")
            raise Permanent(f"Prometheus at {where} refused a request without credentials: HTTP {r.status_code} "
                            "(a prometheus source in --config that reads this URL lends its credentials)")
        if r.status_code != 200:
            raise Transient(f"Prometheus at {where}: HTTP {r.status_code}")
        try:
            return r.json()["data"]
        except (ValueError, KeyError, TypeError):
            raise Permanent(f"{where} did not answer as Prometheus's query API does (is it Prometheus?)") from None

    try:
        data = await retrying(attempt, deadline=TIMEOUT_S)
    finally:
        await client.aclose()
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(result, list):
        raise UsageError([Problem("--query", "does not give a range of one series (a matrix)")])
    if not result:
        raise UsageError([Problem("--query", "matched no series in the window (--since)")])
    if len(result) > 1:
        raise UsageError([Problem("--query", f"gives {len(result)} series, not one: aggregate them (sum(rate(...)))")])
    points: list[tuple[float, float]] = []
    for pair in result[0].get("values", []):
        try:
            t, v = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(v) and v >= 0:
            points.append((t, v))
    return points


def _error(r: httpx2.Response) -> str:
    try:
        return str(r.json().get("error", f"HTTP {r.status_code}"))[:300]
    except (ValueError, AttributeError):
        return f"HTTP {r.status_code}"


def step_for(window: float, interval: float) -> float:
    """The check interval in whole seconds, coarser if the window would pass Prometheus's limit."""
    return float(max(1, math.ceil(interval), math.ceil(window / (MAX_POINTS - 1))))


def rebuild_from_series(points: list[tuple[float, float | None]], step: float, svc: ServiceConfig, query: str, *,
                        service_s: float | None, cv: float = 0.5, seed: int = 1) -> Rebuilt:
    if service_s is None:
        service_s = svc.processing_time
    if service_s is None:
        raise UsageError([Problem("--service-ms", f"a rate series says nothing of the service time: set processing_time "
                                                  f"for {svc.name} in the config, or --service-ms")])
    known = [(t, v) for t, v in points if v is not None]
    if len(known) < 2:
        raise UsageError([Problem("--query", f"only {len(known)} samples in the window: too few to replay")])
    start, end = known[0][0], known[-1][0]
    times, cumulative = [0.0], [0.0]
    gaps = 0
    for t, v in points:
        if t <= start or t > end:
            continue
        gaps += v is None
        times.append(t - start)
        cumulative.append(cumulative[-1] + (v or 0.0) * step)
    duration = max(1, int(round(end - start)))
    trace = spread(f"{svc.name} (prometheus)", times, cumulative, duration)
    scenario = Scenario(service_s=service_s, cv=cv, startup_s=svc.startup_delay, slo_s=svc.target_wait,
                        interval_s=svc.check_interval, min_replicas=svc.min_replicas, max_replicas=svc.max_replicas, seed=seed)
    scenario.check()
    how = [
        f"arrivals: {query} read as messages per second, one point every {step:g} s over {end - start:.0f} s; "
        f"{trace.messages:,} messages in all",
        f"service time: {service_s * 1000:g} ms per message per replica ("
        + ("--service-ms" if service_s != svc.processing_time else "processing_time in the config") + ")",
        f"start-up: {svc.startup_delay:g} s (startup_delay in the config); SLO: {svc.target_wait:g} s wait (target_wait)",
        "gaps: none" if not gaps else f"gaps: {gaps} steps without a sample, counted as no arrivals",
    ]
    unknown = [
        "what the service did: no replica counts, no completions, so no row of what ran",
        "whether the query is an arrival rate: its values are taken as messages per second",
        "when in a step each message arrived, and how the rate varied inside the query's own range window",
        f"how service times vary (cv {cv:g} assumed, --cv), the executor's own time, workers' prefetch",
    ]
    return Rebuilt(service=svc.name, trace=trace, scenario=scenario, initial=svc.min_replicas, start=start, end=end,
                   readings=len(known), interval_s=step, start_call_s=0.0, how=how, unknown=unknown)
