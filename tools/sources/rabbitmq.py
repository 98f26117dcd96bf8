"""RabbitMQ metric source: one queue -> ``queue.*`` metrics, from the management HTTP API.

Counts (ready, unacknowledged, consumers) come from ``GET /api/queues/{vhost}/{queue}``; rates
come from two consecutive reads of the queue's *cumulative* counters (``message_stats.publish``,
``ack``, ``deliver_no_ack``, ``get_no_ack``), never from the API's own ``*_details.rate`` figures,
which are averaged over the management plugin's sample window and lag behind the traffic.

Counters restart from zero when the queue is deleted and re-created, or when the broker
restarts: a counter that went backwards, or a queue that was missing in between, resets the
baseline and omits the rates for that tick (a missing rate is honest, a negative one is not).

The management API's figures lag (its statistics move every ``collect_statistics_interval``):
after a purge it still says thousands are ready. So when the AMQP listener answers (``amqp_url``,
by default the management host's port 5672), the ready and consumer counts come from a passive
``queue.declare`` over AMQP, exact at once, asked beside the management request; the management
API keeps the in-flight count and the rates. An AMQP listener that cannot be asked is said once in
the log and asked again a minute later; meanwhile the management API's counts are used.

``queue.oldest_age`` is the age of the queue's head message by its ``timestamp`` property
(``head_message_timestamp``), which only the publisher sets: absent, with the reason, when it did
not, when the queue is empty, and for queue types the broker does not report it for.

Without the management plugin, ``url: amqp://...`` reads the queue with a passive
``queue.declare`` over AMQP instead: only the ready count and the consumer count, no in-flight
messages and no rates (documented as the weaker mode in docs/sources.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import httpx2
from pydantic import field_validator, model_validator

from docktor.tools.sdk.errors import reason, redact_url
from docktor.tools.sdk.http_client import http_client
from docktor.tools.sdk.metric_info import MetricInfo, Metrics, standard
from docktor.tools.sdk.plugin import Source
from docktor.tools.sdk.rates import Counters, RateTracker
from docktor.tools.sdk.retry import Permanent, Transient, retrying
from docktor.tools.sdk.settings import Context, EnvName, PluginSettings, PositiveSeconds, TlsSettings, env_secret, go_together
from docktor.tools.sdk.urls import url_setting
from docktor.tools.sources.rabbitmq_amqp import PassiveDeclare, QueueNotFound, speaks_amqp
from docktor.tools.sources.rabbitmq_head import HEAD_NOT_YET, NOTHING_READY, head_age

__all__ = ["AMQP_METRICS", "MANAGEMENT_METRICS", "QueueNotFound", "RabbitMQSettings", "RabbitMQSource", "speaks_amqp"]

log = logging.getLogger("docktor.rabbitmq")

#: only the fields read (the full answer lists every consumer and channel: large on busy queues)
_COLUMNS = ",".join([
    "name", "messages_ready", "messages_unacknowledged", "consumers", "consumer_utilisation", "reductions",
    "message_stats.publish", "message_stats.ack", "message_stats.deliver_no_ack", "message_stats.get_no_ack",
    "head_message_timestamp",
])

_EXPECTED_URL = "the management API (http(s)://host:15672) or an AMQP URL (amqp(s)://host:5672)"

#: what the management API adds to the standard metrics
CONSUMER_UTILISATION = MetricInfo(
    "ratio", "fraction of time the queue could deliver to its consumers at once (1 = consumers keep up)"
)
MANAGEMENT_METRICS: Mapping[str, MetricInfo] = {
    **standard("queue.pending", "queue.ack_pending", "queue.backlog", "queue.rate_in", "queue.rate_out", "queue.consumers"),
    "queue.consumer_utilisation": CONSUMER_UTILISATION,
    **standard("queue.oldest_age"),
}
#: a passive queue.declare tells only these
AMQP_METRICS: Mapping[str, MetricInfo] = standard("queue.pending", "queue.consumers")
#: seconds before an AMQP listener that could not be asked for the exact counts is asked again
AMQP_RETRY_S = 60.0


class RabbitMQSettings(PluginSettings):
    """The ``queue:`` block of a service with ``kind: rabbitmq``."""

    kind: Literal["rabbitmq"]
    #: management API (``http(s)://host:15672``, a path prefix allowed) or, without the management
    #: plugin, the AMQP listener (``amqp(s)://host:5672``); never credentials in the URL
    url: Annotated[str, url_setting(("http", "https", "amqp", "amqps"), _EXPECTED_URL)] = "http://127.0.0.1:15672"
    vhost: str = "/"
    queue: str
    #: names of environment variables holding the user and password
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    #: bound of each call (connect, request)
    timeout: PositiveSeconds = 2.0
    #: the broker's ``collect_statistics_interval``: the management API's figures move in steps
    #: of it; an unchanged answer younger than two of them is the same sample, not a rate of 0
    statistics_interval: PositiveSeconds = 5.0
    tls: TlsSettings | None = None
    #: with the management API: the AMQP listener whose passive ``queue.declare`` gives the exact
    #: ready count (the management API's lags); default: the management URL's host, port 5672
    #: (``amqps`` on 5671 when the API is ``https``)
    amqp_url: Annotated[str | None, url_setting(("amqp", "amqps"), "an AMQP URL (amqp(s)://host:5672)")] = None
    #: false: take every count from the management API (no AMQP connection at all)
    ready_over_amqp: bool = True

    @field_validator("url")
    @classmethod
    def _vhost_not_in_amqp_path(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.startswith("amqp") and parts.path not in ("", "/"):
            raise ValueError("the vhost goes in vhost:, not in the AMQP URL's path")
        return value.rstrip("/")

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, value: str) -> str:
        if not value or len(value.encode()) > 255:
            raise ValueError("a queue name has 1 to 255 bytes")
        return value

    @model_validator(mode="after")
    def _check(self) -> RabbitMQSettings:
        go_together(self, "username_env", "password_env")
        if self.tls is not None and not self.secure:
            raise ValueError("tls: needs an https:// or amqps:// url")
        return self

    @property
    def amqp(self) -> bool:
        """True in the AMQP-only mode (no management plugin)."""
        return self.url.startswith("amqp")

    @property
    def secure(self) -> bool:
        return self.url.startswith(("https", "amqps"))

    @property
    def exact_url(self) -> str | None:
        """Where the exact ready count is asked beside the management API (None: it is not)."""
        if self.amqp or not self.ready_over_amqp:
            return None
        if self.amqp_url is not None:
            return self.amqp_url
        host = urlsplit(self.url).hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"amqps://{host}:5671" if self.secure else f"amqp://{host}:5672"


class QueueCounters(Counters):
    """The cumulative counters of one answer (absent ones are 0: the API omits counters never
    moved), and everything else it said: two equal instances are the same statistics sample."""

    published: int
    #: acknowledged, plus delivered/fetched in no-ack mode (done on delivery)
    done: int
    #: the queue process's reductions (work done): restart from 0 with a new process
    reductions: int | None
    #: the rest of the answer (counts, utilisation, every message_stats counter)
    sample: tuple[tuple[str, int | float | None], ...]

    def totals(self) -> tuple[int, int]:
        return self.published, self.done

    def discontinuity(self, earlier: QueueCounters) -> str | None:
        """Why the change since ``earlier`` is not traffic (queue re-created, broker restarted), or None."""
        if self.published < earlier.published or self.done < earlier.done:
            return "counters went backwards (queue re-created or broker restarted)"
        if earlier.reductions is not None and self.reductions is not None and self.reductions < earlier.reductions:
            return "queue process restarted (queue re-created or broker restarted)"
        return None


class RabbitMQSource(Source[RabbitMQSettings]):
    """``queue.*`` metrics for one RabbitMQ queue."""

    Settings = RabbitMQSettings
    provides = MANAGEMENT_METRICS

    def __init__(
        self, settings: RabbitMQSettings, context: Context | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(settings, context or Context(service="", base_dir=Path.cwd(), state_dir=Path.cwd()))
        self._clock = clock
        self._http: httpx2.AsyncClient | None = None
        # The management API's figures move once per statistics interval: an unchanged answer
        # younger than two of them is the same sample, not a rate of 0.
        self._rates = RateTracker(
            QueueCounters, label=f"{settings.vhost}/{settings.queue}", log=log, repeat_same_within=2 * settings.statistics_interval
        )
        self._lock = asyncio.Lock()
        #: when (``clock``) the AMQP listener may be asked again for the exact counts, after it failed
        self._amqp_retry_at = -math.inf
        #: why it failed (said in the log once per outage), None while it answers
        self.amqp_problem: str | None = None
        #: why a metric the latest reading lacks is absent (``queue.oldest_age``: no timestamp, ...)
        self.why_absent: dict[str, str] = {}
        #: the passive declares' AMQP connection, kept between reads
        self._declare: PassiveDeclare | None = None
        #: the latest statistics showed no message ready (the age then is 0 unless the exact count says otherwise)
        self._head_empty = False

    @property
    def last_reset(self) -> str | None:
        """Why the latest reading has no rates, when it has none (first read, re-created queue, ...)."""
        return self._rates.last_reset

    @classmethod
    def metrics_for(cls, settings: RabbitMQSettings) -> Mapping[str, MetricInfo]:
        return AMQP_METRICS if settings.amqp else MANAGEMENT_METRICS

    @classmethod
    def describe(cls, settings: RabbitMQSettings) -> str:
        via = "AMQP, counts only" if settings.amqp else "management API"
        return f"rabbitmq queue {settings.queue} in vhost {settings.vhost} ({via})"

    @classmethod
    def check(cls, settings: RabbitMQSettings, context: Context) -> list[str]:
        warnings = super().check(settings, context)
        if settings.amqp:
            warnings.append(
                "AMQP-only mode reads ready messages and consumers only: no in-flight messages, no rates "
                "(enable rabbitmq_management and use its http:// URL for queue.backlog and rates)"
            )
        return warnings

    # ------------------------------------------------------------------ public

    async def read(self) -> Metrics:
        async with self._lock:
            try:
                if self.settings.amqp:
                    return await retrying(self._read_amqp, deadline=self.settings.timeout)  # counts only: no rates
                # both at once: the exact counts cost no time beyond the management request's
                body, exact = await asyncio.gather(
                    retrying(self._read_management, deadline=self.settings.timeout), self._exact_counts()
                )
            except QueueNotFound:
                # whatever comes back under this name later is a new queue with new counters
                self._rates.reset("queue re-created")
                raise
            out = self._metrics(body, self._clock())
            if exact is not None:
                # the ready count now, not as the statistics last saw it; in flight and the
                # rates stay the management API's (a passive declare does not know them)
                out.update(exact)
                if "queue.ack_pending" in out:
                    out["queue.backlog"] = out["queue.pending"] + out["queue.ack_pending"]
                self._age_by_exact_count(out)
            return out

    def _age_by_exact_count(self, out: Metrics) -> None:
        """The head's age comes from the statistics (a passive declare knows no head): an empty
        queue's is 0, whatever head they still show; a ready queue they show empty has one, not
        in them yet."""
        if out.get("queue.pending") == 0.0:
            out["queue.oldest_age"] = 0.0
            self.why_absent = {}
        elif out.get("queue.pending", 0.0) > 0 and self._head_empty:
            out.pop("queue.oldest_age", None)
            self.why_absent = {"queue.oldest_age": HEAD_NOT_YET}

    def snapshot(self) -> dict[str, Any] | None:
        """The previous read's counters and statistics sample (the rate baseline), for the daemon's state file."""
        return self._rates.snapshot(self._clock())

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        """The baseline of a previous daemon: the first read after a restart has rates again (a
        broker restart or re-created queue meanwhile is caught like between two ticks)."""
        return self._rates.restore(data, elapsed, self._clock())

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        declare, self._declare = self._declare, None
        if declare is not None:
            await declare.close()

    # ------------------------------------------------------------------ metrics

    def _metrics(self, q: Mapping[str, Any], now: float) -> Metrics:
        out: Metrics = {}
        ready, unacked = _count(q, "messages_ready"), _count(q, "messages_unacknowledged")
        if ready is not None:
            out["queue.pending"] = ready
        if unacked is not None:
            out["queue.ack_pending"] = unacked
        if ready is not None and unacked is not None:
            out["queue.backlog"] = ready + unacked
        if (consumers := _count(q, "consumers")) is not None:
            out["queue.consumers"] = consumers
        utilisation = q.get("consumer_utilisation")
        if isinstance(utilisation, int | float) and not isinstance(utilisation, bool) and math.isfinite(utilisation):
            out["queue.consumer_utilisation"] = float(utilisation)
        age = head_age(q, time.time())
        # nothing ready: nothing waits, age 0 (as SQS says of an empty queue), unless the exact count disagrees
        self._head_empty = age == NOTHING_READY
        self.why_absent = {"queue.oldest_age": age} if isinstance(age, str) and not self._head_empty else {}
        if self._head_empty:
            out["queue.oldest_age"] = 0.0
        elif not isinstance(age, str):
            out["queue.oldest_age"] = age
        if ready is None:
            # A queue just declared (or a node just restarted) has no statistics yet: its counters
            # are unknown, not zero; the next tick starts the baseline.
            self._rates.reset("no statistics yet")
            return out
        out.update(self._rates.update(_counters(q), now))
        return out

    def _credentials(self) -> tuple[str, str] | None:
        s = self.settings
        if s.username_env is None or s.password_env is None:
            return None
        return env_secret(s.username_env, "username_env"), env_secret(s.password_env, "password_env")

    # ------------------------------------------------------------------ management API

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = http_client(self.settings.tls, self.context, self.settings.timeout)
        return self._http

    async def _read_management(self) -> Mapping[str, Any]:
        s = self.settings
        url = f"{s.url}/api/queues/{quote(s.vhost, safe='')}/{quote(s.queue, safe='')}?columns={_COLUMNS}"
        where = redact_url(s.url)
        auth = self._credentials()
        client = self._client()
        try:
            async with asyncio.timeout(s.timeout + 0.5):  # httpx2 bounds each phase; this bounds them all
                r = await client.get(url, auth=auth, headers={"accept": "application/json"})
        except (TimeoutError, httpx2.TimeoutException):
            raise Transient(f"management API at {where} timed out after {s.timeout:g}s") from None
        except (httpx2.RemoteProtocolError, httpx2.ReadError) as e:
            # The AMQP listener answers HTTP with its own protocol header and hangs up (often a
            # reset before the client reads it): ask it in its own protocol to tell which it is.
            if await speaks_amqp(s.url, s.timeout):
                raise Permanent(
                    f"{where} answered AMQP, not HTTP: is this the AMQP port? (the management API listens on 15672 by default)"
                ) from None
            raise Transient(f"cannot reach the management API at {where}: {reason(e)}") from None
        except (httpx2.HTTPError, ssl.SSLError, OSError) as e:
            raise Transient(f"cannot reach the management API at {where}: {reason(e)}") from None
        if r.status_code == 404:
            raise QueueNotFound(f"queue {s.queue!r} not found in vhost {s.vhost!r} ({where})")
        if r.status_code == 401:
            who = f"the user in {s.username_env}" if s.username_env else "no credentials (set username_env/password_env)"
            raise Permanent(f"management API at {where} refused {who}: HTTP 401")
        if r.status_code == 403:
            raise Permanent(f"management API at {where}: HTTP 403, the user may not read vhost {s.vhost!r}")
        if r.status_code >= 500:
            raise Transient(f"management API at {where}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise Permanent(f"management API at {where}: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise Transient(f"management API at {where}: answer is not JSON") from None
        if not isinstance(body, dict) or body.get("name") != s.queue:
            raise Transient(f"management API at {where}: unexpected answer (not the queue {s.queue!r})")
        return body

    # ------------------------------------------------------------------ AMQP

    async def _exact_counts(self) -> Metrics | None:
        """The ready and consumer counts from a passive ``queue.declare`` (exact, no statistics
        lag), or None when AMQP is not to be asked or did not answer: one attempt, bounded by
        ``timeout``, never failing the read (the management API's counts stand in)."""
        url = self.settings.exact_url
        if url is None or self._clock() < self._amqp_retry_at:
            return None
        try:
            counts = await self._read_amqp(url)
        except QueueNotFound:
            return None  # the management API says whether the queue exists (it may lag here too)
        except (Transient, Permanent) as e:
            if self.amqp_problem is None:
                log.warning("%s/%s: ready count from the management API (it lags up to statistics_interval): %s; "
                            "AMQP asked again every %.0f s", self.settings.vhost, self.settings.queue, e, AMQP_RETRY_S)
            self.amqp_problem = str(e)
            self._amqp_retry_at = self._clock() + AMQP_RETRY_S
            return None
        if self.amqp_problem is not None:
            log.info("%s/%s: ready count over AMQP again", self.settings.vhost, self.settings.queue)
            self.amqp_problem = None
        return counts

    async def _read_amqp(self, url: str | None = None) -> Metrics:
        s = self.settings
        url = url or s.url
        ctx = s.tls.ssl_context(self.context) if s.tls is not None and url.startswith("amqps") else None
        if self._declare is None or self._declare.url != url:
            self._declare = PassiveDeclare(url, s.vhost, s.queue, ctx)
        return await self._declare.read(self._credentials(), s.timeout)

def _count(q: Mapping[str, Any], key: str) -> float | None:
    value = q.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _counters(q: Mapping[str, Any]) -> QueueCounters:
    stats = q.get("message_stats")
    stats = stats if isinstance(stats, dict) else {}

    def n(key: str) -> int:
        value = stats.get(key, 0)
        return value if _is_int(value) else 0

    reductions = q.get("reductions")
    return QueueCounters(
        published=n("publish"),
        done=n("ack") + n("deliver_no_ack") + n("get_no_ack"),
        reductions=reductions if _is_int(reductions) else None,
        sample=_sample(q, stats),
    )


def _sample(q: Mapping[str, Any], stats: Mapping[str, Any]) -> tuple[tuple[str, int | float | None], ...]:
    """Everything read from one answer: equal samples are the same statistics sample. ``reductions``
    (work done by the queue process) moves with every sample the queue emits, busy or not."""
    head = ("messages_ready", "messages_unacknowledged", "consumers", "consumer_utilisation", "reductions")
    pairs = [(k, q.get(k)) for k in head] + sorted((f"message_stats.{k}", v) for k, v in stats.items() if _is_int(v))
    return tuple((k, v if isinstance(v, int | float) and not isinstance(v, bool) else None) for k, v in pairs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

