"""RabbitMQ metric source: one queue -> ``queue.*`` metrics, from the management HTTP API.

Counts (ready, unacknowledged, consumers) come from ``GET /api/queues/{vhost}/{queue}``; rates
come from two consecutive reads of the queue's *cumulative* counters (``message_stats.publish``,
``ack``, ``deliver_no_ack``, ``get_no_ack``), never from the API's own ``*_details.rate`` figures,
which are averaged over the management plugin's sample window and lag behind the traffic.

Counters restart from zero when the queue is deleted and re-created, or when the broker
restarts: a counter that went backwards, or a queue that was missing in between, resets the
baseline and omits the rates for that tick (a missing rate is honest, a negative one is not).

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx2
from pydantic import field_validator, model_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from docktor.tools.sdk import (
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
    one_line,
    redact_url,
    standard,
)

log = logging.getLogger("docktor.rabbitmq")

_ATTEMPTS = 3
#: only the fields read (the full answer lists every consumer and channel: large on busy queues)
_COLUMNS = ",".join([
    "name", "messages_ready", "messages_unacknowledged", "consumers", "consumer_utilisation", "reductions",
    "message_stats.publish", "message_stats.ack", "message_stats.deliver_no_ack", "message_stats.get_no_ack",
])
_WAIT = wait_exponential(multiplier=0.1, max=0.5)

#: what the management API adds to the standard metrics
CONSUMER_UTILISATION = MetricInfo(
    "ratio", "fraction of time the queue could deliver to its consumers at once (1 = consumers keep up)"
)
MANAGEMENT_METRICS: Mapping[str, MetricInfo] = {
    **standard("queue.pending", "queue.ack_pending", "queue.backlog", "queue.rate_in", "queue.rate_out", "queue.consumers"),
    "queue.consumer_utilisation": CONSUMER_UTILISATION,
}
#: a passive queue.declare tells only these
AMQP_METRICS: Mapping[str, MetricInfo] = standard("queue.pending", "queue.consumers")


class RabbitMQSettings(PluginSettings):
    """The ``queue:`` block of a service with ``kind: rabbitmq``."""

    kind: Literal["rabbitmq"]
    #: management API (``http(s)://host:15672``, a path prefix allowed) or, without the management
    #: plugin, the AMQP listener (``amqp(s)://host:5672``); never credentials in the URL
    url: str = "http://127.0.0.1:15672"
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

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "amqp", "amqps") or not parts.hostname:
            raise ValueError("must be the management API (http(s)://host:15672) or an AMQP URL (amqp(s)://host:5672)")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL; use username_env/password_env")
        if parts.query or parts.fragment:
            raise ValueError("no query or fragment in the URL")
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
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
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


@dataclass(frozen=True)
class Counters:
    """The cumulative counters of one read (absent ones are 0: the API omits counters never moved)."""

    published: int
    completed: int  # acknowledged, plus delivered/fetched in no-ack mode (done on delivery)
    reductions: int | None  # the queue process's reductions: restart from 0 with a new process


class _Transient(Exception):
    """One attempt failed in a way another attempt may fix."""


class _Permanent(Exception):
    """Retrying cannot fix it (missing queue, refused credentials, bad answer)."""


class QueueNotFound(SourceError):
    """The queue (or its vhost) does not exist."""


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
        self._prev: Counters | None = None
        self._prev_at = 0.0
        self._gap: str | None = "first reading"
        self._sample: tuple[Any, ...] | None = None
        self._rates: Metrics = {}
        self._lock = asyncio.Lock()
        #: why the latest reading has no rates, when it has none (first read, re-created queue, ...)
        self.last_reset: str | None = None

    @classmethod
    def metrics_for(cls, settings: RabbitMQSettings) -> Mapping[str, MetricInfo]:
        return AMQP_METRICS if settings.amqp else MANAGEMENT_METRICS

    @classmethod
    def describe(cls, settings: RabbitMQSettings) -> str:
        via = "AMQP, counts only" if settings.amqp else "management API"
        return f"rabbitmq queue {settings.queue} in vhost {settings.vhost} ({via})"

    @classmethod
    def check(cls, settings: RabbitMQSettings, context: Context) -> list[str]:
        warnings = settings.tls.missing(context) if settings.tls else []
        if settings.amqp:
            warnings.append(
                "AMQP-only mode reads ready messages and consumers only: no in-flight messages, no rates "
                "(enable rabbitmq_management and use its http:// URL for queue.backlog and rates)"
            )
        return warnings

    # ------------------------------------------------------------------ public

    async def read(self) -> Metrics:
        async with self._lock:
            fetch = self._read_amqp if self.settings.amqp else self._read_management
            try:
                body = await self._retrying(fetch)
            except QueueNotFound:
                # whatever comes back under this name later is a new queue with new counters
                self._gap = "queue re-created"
                raise
            if self.settings.amqp:
                counts: Metrics = body  # the AMQP mode's figures need no counters
                return counts
            return self._metrics(body, self._clock())

    def snapshot(self) -> dict[str, Any] | None:
        """The previous read's counters and statistics sample (the rate baseline), for the daemon's state file."""
        if self._prev is None or self._gap is not None:
            return None
        sample = self._sample or ()
        return {
            "v": 1, "age_s": self._clock() - self._prev_at,
            "counters": {"published": self._prev.published, "completed": self._prev.completed, "reductions": self._prev.reductions},
            "sample": {"head": list(sample[:5]), "stats": [list(kv) for kv in sample[5:]]}, "rates": dict(self._rates),
        }

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        """The baseline of a previous daemon: the first read after a restart has rates again (a
        broker restart or re-created queue meanwhile is caught like between two ticks)."""
        if data.get("v") != 1:
            return False
        c = data["counters"]
        reductions = c["reductions"]
        counters = Counters(int(c["published"]), int(c["completed"]), None if reductions is None else int(reductions))
        head, stats = data["sample"]["head"], data["sample"]["stats"]
        if len(head) != 5:
            return False
        age = float(data["age_s"]) + elapsed
        if not (0 <= age < float("inf")):
            return False
        self._prev, self._prev_at, self._gap = counters, self._clock() - age, None
        self._sample = tuple(head) + tuple((str(k), int(v)) for k, v in stats)
        self._rates = {str(k): float(v) for k, v in data["rates"].items()}
        return True

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

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
        if ready is None:
            # A queue just declared (or a node just restarted) has no statistics yet: its counters
            # are unknown, not zero; the next tick starts the baseline.
            self.last_reset = "no statistics yet"
            self._prev, self._gap, self._rates = None, self._gap or "no statistics yet", {}
            return out
        cur, sample = _counters(q), _sample(q)
        prev, elapsed = self._prev, now - self._prev_at
        if self._gap is not None or prev is None:
            reset: str | None = self._gap or "first reading"
        else:
            reset = _discontinuity(prev, cur)
        if reset is None and sample == self._sample and elapsed < 2 * self.settings.statistics_interval:
            # The broker has published no new statistics since the baseline (it does so every
            # statistics_interval): the same sample again is no evidence of a rate of 0. Keep the
            # baseline; the rates stay those of the latest statistics period.
            self.last_reset = "no new statistics since the previous reading"
            out.update(self._rates)
            return out
        if reset is None and elapsed <= 0:
            self.last_reset = "no time elapsed since the previous reading"
            return out
        self._rates = {}
        if reset is None:
            assert prev is not None
            # the interval runs from when each sample was first seen, so it spans whole
            # statistics periods however the ticks fall between them
            self._rates = {
                "queue.rate_in": (cur.published - prev.published) / elapsed,
                "queue.rate_out": (cur.completed - prev.completed) / elapsed,
            }
            out.update(self._rates)
        elif prev is not None or reset != "first reading":
            log.info("%s/%s: %s; rates resume next tick", self.settings.vhost, self.settings.queue, reset)
        self.last_reset, self._gap = reset, None
        self._prev, self._prev_at, self._sample = cur, now, sample
        return out

    # ------------------------------------------------------------------ retries

    async def _retrying(self, attempt_fn: Callable[[], Awaitable[Any]]) -> Any:
        retrying = AsyncRetrying(
            # quick failures (refused, 503) get three attempts; one that used the whole timeout
            # is not repeated in this tick: the next tick is the retry
            stop=stop_after_attempt(_ATTEMPTS) | stop_after_delay(self.settings.timeout),
            wait=_WAIT,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await attempt_fn()
        except _Permanent as e:
            raise SourceError(str(e)) from None
        except _Transient as e:
            raise SourceError(str(e)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _credentials(self) -> tuple[str, str] | None:
        s = self.settings
        if s.username_env is None or s.password_env is None:
            return None
        try:
            return env_secret(s.username_env, "username_env"), env_secret(s.password_env, "password_env")
        except SourceError as e:
            raise _Permanent(str(e)) from None

    # ------------------------------------------------------------------ management API

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

    async def _read_management(self) -> Mapping[str, Any]:
        s = self.settings
        url = f"{s.url}/api/queues/{quote(s.vhost, safe='')}/{quote(s.queue, safe='')}?columns={_COLUMNS}"
        where = redact_url(s.url)
        auth = self._credentials()
        client = self._client()
        try:
            async with asyncio.timeout(s.timeout + 0.5):  # httpx2 bounds each phase; this bounds them all
                r = await client.get(url, auth=auth, headers={"accept": "application/json"})
        except TimeoutError:
            raise _Transient(f"management API at {where} timed out after {s.timeout:g}s") from None
        except httpx2.TimeoutException:
            raise _Transient(f"management API at {where} timed out after {s.timeout:g}s") from None
        except (httpx2.HTTPError, ssl.SSLError, OSError) as e:
            raise _Transient(f"cannot reach the management API at {where}: {_reason(e)}") from None
        if r.status_code == 404:
            raise QueueNotFound(f"queue {s.queue!r} not found in vhost {s.vhost!r} ({where})")
        if r.status_code == 401:
            who = f"the user in {s.username_env}" if s.username_env else "no credentials (set username_env/password_env)"
            raise _Permanent(f"management API at {where} refused {who}: HTTP 401")
        if r.status_code == 403:
            raise _Permanent(f"management API at {where}: HTTP 403, the user may not read vhost {s.vhost!r}")
        if r.status_code >= 500:
            raise _Transient(f"management API at {where}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise _Permanent(f"management API at {where}: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise _Transient(f"management API at {where}: answer is not JSON") from None
        if not isinstance(body, dict) or body.get("name") != s.queue:
            raise _Transient(f"management API at {where}: unexpected answer (not the queue {s.queue!r})")
        return body

    # ------------------------------------------------------------------ AMQP-only mode

    async def _read_amqp(self) -> Metrics:
        import aiormq  # only this mode needs it
        import aiormq.exceptions

        s = self.settings
        where = redact_url(s.url)
        creds = self._credentials()
        parts = urlsplit(s.url)
        user, password = creds if creds is not None else ("guest", "guest")
        vhost = "" if s.vhost == "/" else quote(s.vhost, safe="")  # aiormq reads an empty path as "/"
        port = parts.port or (5671 if s.secure else 5672)
        url = f"{parts.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{port}/{vhost}"
        try:
            ctx = s.tls.ssl_context(self.context) if s.tls is not None else None
        except SourceError as e:
            raise _Permanent(str(e)) from None
        connection: Any = None
        try:
            async with asyncio.timeout(s.timeout):
                connection = await aiormq.connect(url, context=ctx) if ctx is not None else await aiormq.connect(url)
                channel = await connection.channel()
                ok = await channel.queue_declare(s.queue, passive=True)
        except TimeoutError:
            raise _Transient(f"AMQP {where} timed out after {s.timeout:g}s") from None
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise QueueNotFound(f"queue {s.queue!r} not found in vhost {s.vhost!r} ({where})") from None
        except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError):
            raise _Permanent(f"AMQP {where} refused the credentials") from None
        except aiormq.exceptions.ConnectionNotAllowed:
            raise _Permanent(f"AMQP {where}: the user may not use vhost {s.vhost!r}") from None
        except (aiormq.exceptions.AMQPError, OSError, ConnectionError) as e:
            raise _Transient(f"cannot read {s.queue!r} over AMQP at {where}: {_scrub(one_line(e), password)}") from None
        finally:
            if connection is not None:
                try:
                    async with asyncio.timeout(s.timeout):
                        await connection.close()
                except Exception as e:  # closing is best effort; the reading is what matters
                    log.debug("AMQP close failed: %s", _scrub(one_line(e), password))
        return {"queue.pending": float(ok.message_count), "queue.consumers": float(ok.consumer_count)}


def _count(q: Mapping[str, Any], key: str) -> float | None:
    value = q.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _counters(q: Mapping[str, Any]) -> Counters:
    stats = q.get("message_stats") or {}

    def n(key: str) -> int:
        value = stats.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    reductions = q.get("reductions")
    return Counters(
        published=n("publish"),
        completed=n("ack") + n("deliver_no_ack") + n("get_no_ack"),
        reductions=reductions if isinstance(reductions, int) and not isinstance(reductions, bool) else None,
    )


def _sample(q: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything read from one answer: equal tuples are the same statistics sample. ``reductions``
    (work done by the queue process) moves with every sample the queue emits, busy or not."""
    stats = q.get("message_stats") or {}
    return tuple(q.get(k) for k in ("messages_ready", "messages_unacknowledged", "consumers", "consumer_utilisation", "reductions")) + tuple(
        sorted((k, v) for k, v in stats.items() if isinstance(v, int))
    )


def _discontinuity(prev: Counters, cur: Counters) -> str | None:
    """Why the counters between two reads are not traffic (queue re-created, broker restarted), or None."""
    if cur.published < prev.published or cur.completed < prev.completed:
        return "counters went backwards (queue re-created or broker restarted)"
    if prev.reductions is not None and cur.reductions is not None and cur.reductions < prev.reductions:
        return "queue process restarted (queue re-created or broker restarted)"
    return None


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return redact_url(text[0]) if text and text[0] else type(e).__name__


def _scrub(text: str, secret: str) -> str:
    return redact_url(text.replace(secret, "***") if secret else text)
