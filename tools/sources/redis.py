"""Redis metric source, in one of three modes, chosen by the settings:

* ``list: jobs`` (or a list of keys): the length of one or more lists. A plain list knows only
  what waits in it: ``queue.pending`` = ``queue.backlog``, no in-flight count and no rates.
* ``celery_queue: celery``: a Celery (kombu) queue on Redis. The waiting messages are the list
  ``celery`` plus its priority sub-queues (``celery\\x06\\x163``, ...); the reserved ones (taken by
  a worker, not yet acknowledged) are the entries of kombu's ``unacked`` hash whose routing key
  is the queue. ``queue.backlog`` = waiting + reserved, like NATS ack-pending. No rates: Celery
  keeps no counters in Redis.
* ``stream: events`` + ``group: workers``: a Redis Stream read by a consumer group.
  ``queue.lag`` (entries not yet delivered to the group, Redis >= 7) and ``queue.ack_pending``
  (delivered, not acknowledged: the pending entries list) from XINFO GROUPS; rates from
  consecutive reads of the stream's ``entries-added`` and the group's ``entries-read`` counters.
  ``queue.oldest_age`` from the ID time of the first entry after the group's last-delivered ID,
  ``queue.oldest_in_flight_age`` from XPENDING's idle time of the first pending entry. A list or a
  Celery message carries no time Redis keeps (neither kombu nor Celery write one), so those modes
  have neither.

Every mode reads its keys in one MULTI/EXEC transaction, so a message moving from a list to
the ``unacked`` hash is never counted twice or not at all within one reading.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from pydantic import field_validator, model_validator
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from docktor.tools.sdk.ages import age_since
from docktor.tools.sdk.errors import reason, redact_url
from docktor.tools.sdk.metric_info import MetricInfo, Metrics, Missing, standard
from docktor.tools.sdk.plugin import Source
from docktor.tools.sdk.rates import Counters, RateTracker
from docktor.tools.sdk.retry import Permanent, Transient, retrying
from docktor.tools.sdk.settings import Context, EnvName, PluginSettings, PositiveSeconds, TlsSettings, env_secret, go_together
from docktor.tools.sdk.urls import url_setting

log = logging.getLogger("docktor.redis")

#: most entries counted by hand when Redis cannot tell a group's lag (beyond it, lag is missing)
LAG_SCAN_LIMIT = 1000
#: kombu's separator between a queue name and its priority (kombu.transport.redis)
CELERY_PRIORITY_SEP = "\x06\x16"

LIST_METRICS: Mapping[str, MetricInfo] = standard("queue.pending", "queue.backlog")
CELERY_METRICS: Mapping[str, MetricInfo] = standard("queue.pending", "queue.ack_pending", "queue.backlog")
STREAM_METRICS: Mapping[str, MetricInfo] = standard(
    "queue.pending", "queue.lag", "queue.ack_pending", "queue.backlog", "queue.consumers", "queue.rate_in", "queue.rate_out",
    "queue.oldest_age", "queue.oldest_in_flight_age",
)


#: one list key or several (the field is named ``list``, which shadows the builtin in the class body)
Keys = str | list[str]


class RedisSettings(PluginSettings):
    """The ``queue:`` block of a service with ``kind: redis``: exactly one of ``list``,
    ``celery_queue`` or ``stream`` (with ``group``)."""

    kind: Literal["redis"]
    #: ``redis://host:6379/0`` or ``rediss://`` (TLS); the path is the database number; no credentials
    url: Annotated[str, url_setting(("redis", "rediss"), "redis://host:6379/0 or rediss://host:6380/0 (TLS)")] = "redis://127.0.0.1:6379/0"
    #: a plain list, or several whose lengths add up
    list: Keys | None = None
    #: a Celery queue name (the ``-Q`` of your workers, ``celery`` by default)
    celery_queue: str | None = None
    #: Celery's priority steps (kombu's ``priority_steps`` transport option)
    celery_priority_steps: tuple[int, ...] = (0, 3, 6, 9)
    #: kombu's hash of reserved messages (``unacked_key`` transport option)
    celery_unacked_key: str = "unacked"
    #: a stream read by a consumer group
    stream: str | None = None
    group: str | None = None
    #: names of environment variables holding the ACL user and the password (``requirepass``: password only)
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    timeout: PositiveSeconds = 2.0
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _path_is_the_database(cls, value: str) -> str:
        db = urlsplit(value).path.strip("/")
        if db and not db.isdigit():
            raise ValueError("the URL's path is the database number, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("list")
    @classmethod
    def _check_list(cls, value: Keys | None) -> Keys | None:
        if isinstance(value, builtins.list) and not value:
            raise ValueError("name at least one key")
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> RedisSettings:
        modes = [self.list is not None, self.celery_queue is not None, self.stream is not None]
        if sum(modes) != 1:
            raise ValueError("give exactly one of list:, celery_queue: or stream: (with group:)")
        go_together(self, "stream", "group")
        if self.password_env is None and self.username_env is not None:
            raise ValueError("username_env needs password_env")
        if self.tls is not None and not self.url.startswith("rediss://"):
            raise ValueError("tls: needs a rediss:// url")
        return self

    @property
    def mode(self) -> Literal["list", "celery", "stream"]:
        return "list" if self.list is not None else "celery" if self.celery_queue is not None else "stream"

    @property
    def keys(self) -> builtins.list[str]:
        """The lists whose lengths are read (list and Celery modes)."""
        if self.list is not None:
            return [self.list] if isinstance(self.list, str) else builtins.list(self.list)
        if self.celery_queue is not None:
            q = self.celery_queue
            return [q if step == 0 else f"{q}{CELERY_PRIORITY_SEP}{step}" for step in self.celery_priority_steps]
        return []

    @property
    def db(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path else 0


class StreamCounters(Counters):
    """A stream's and its group's counters (Redis >= 7)."""

    #: the stream's entries-added
    added: int
    #: the group's entries-read: entries delivered to the group
    read: int
    #: delivered and not yet acknowledged
    pending: int

    def totals(self) -> tuple[int, int]:
        # completed = delivered to the group (entries-read) minus still pending (not acknowledged)
        return self.added, self.read - self.pending

    def discontinuity(self, earlier: StreamCounters) -> str | None:
        if self.added < earlier.added:
            return "entries-added went backwards (stream re-created)"
        if self.read < earlier.read:
            return "entries-read went backwards (group re-created or moved with XGROUP SETID)"
        if self.totals()[1] < earlier.totals()[1]:
            return "completed count went backwards (group moved with XGROUP SETID)"
        return None


class RedisSource(Source[RedisSettings]):
    """``queue.*`` metrics for Redis lists, a Celery queue, or a stream's consumer group."""

    Settings = RedisSettings

    def __init__(self, settings: RedisSettings, context: Context | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, context or Context(service="", base_dir=Path.cwd(), state_dir=Path.cwd()))
        self._clock = clock
        self._client: aioredis.Redis | None = None
        self._lock = asyncio.Lock()
        self._rates = RateTracker(StreamCounters, label=f"{settings.stream}/{settings.group}", log=log)

    @property
    def last_reset(self) -> str | None:
        """Why the latest stream reading has no rates, when it has none."""
        return self._rates.last_reset

    @classmethod
    def metrics_for(cls, settings: RedisSettings) -> Mapping[str, MetricInfo]:
        return {"list": LIST_METRICS, "celery": CELERY_METRICS, "stream": STREAM_METRICS}[settings.mode]

    @classmethod
    def describe(cls, settings: RedisSettings) -> str:
        if settings.mode == "stream":
            return f"redis stream {settings.stream}/{settings.group}"
        if settings.mode == "celery":
            return f"redis celery queue {settings.celery_queue}"
        return f"redis list {', '.join(settings.keys)}"

    # ------------------------------------------------------------------ public

    async def read(self) -> Metrics:
        async with self._lock:
            s = self.settings
            if s.mode == "stream":
                counters, out = await retrying(self._read_stream, deadline=s.timeout)
                if counters is None:
                    self._rates.reset("the stream's counters are unknown (Redis < 7, or entries deleted)")
                    return out
                return out | self._rates.update(counters, self._clock())
            return await retrying(self._read_celery if s.mode == "celery" else self._read_lists, deadline=s.timeout)

    def snapshot(self) -> dict[str, Any] | None:
        """A stream's previous counters (the rate baseline), for the daemon's state file; lists and
        Celery queues have no rates and nothing to keep."""
        return self._rates.snapshot(self._clock())

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        """The baseline of a previous daemon: the first read after a restart has rates again (a
        re-created stream or moved group meanwhile is caught like between two ticks)."""
        return self.settings.mode == "stream" and self._rates.restore(data, elapsed, self._clock())

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------------ modes

    async def _read_lists(self) -> Metrics:
        lengths = await self._transaction(lambda p: [p.llen(k) for k in self.settings.keys])
        total = float(sum(lengths))
        return {"queue.pending": total, "queue.backlog": total}

    async def _read_celery(self) -> Metrics:
        s = self.settings
        keys = s.keys
        replies = await self._transaction(lambda p: [*(p.llen(k) for k in keys), p.hvals(s.celery_unacked_key)])
        waiting = sum(replies[: len(keys)])
        reserved = sum(1 for raw in replies[-1] if _routing_key(raw) == s.celery_queue)
        return {"queue.pending": float(waiting), "queue.ack_pending": float(reserved), "queue.backlog": float(waiting + reserved)}

    async def _read_stream(self) -> tuple[StreamCounters | None, Metrics]:
        s = self.settings
        assert s.stream is not None and s.group is not None
        try:
            stream_info, groups = await self._transaction(lambda p: [p.xinfo_stream(s.stream), p.xinfo_groups(s.stream)])
        except Permanent as e:
            if "no such key" in str(e).lower():
                self._rates.reset("stream re-created")
                raise Permanent(f"stream {s.stream!r} not found") from None
            raise
        group = next((g for g in groups if _text(g.get("name")) == s.group), None)
        if group is None:
            self._rates.reset("group re-created")
            raise Permanent(f"consumer group {s.group!r} not found on stream {s.stream!r}")
        pending = int(group.get("pending") or 0)
        out: Metrics = {"queue.ack_pending": float(pending), "queue.consumers": float(group.get("consumers") or 0)}
        lag = group.get("lag")
        if not isinstance(lag, int):
            # nil when Redis cannot tell: after a restart (Redis 7.0 does not persist the group's
            # entries-read), or with entries deleted mid-stream; absent before Redis 7
            lag = await self._count_after(s.stream, group.get("last-delivered-id"))
        if lag is not None:
            out["queue.lag"] = out["queue.pending"] = float(lag)
            out["queue.backlog"] = float(lag + pending)
        out |= await self._ages(s.stream, s.group, group.get("last-delivered-id"))
        added = stream_info.get("entries-added")
        # Redis's own relation (lag = entries-added - entries-read) gives the group's delivered
        # count even when it reports entries-read as nil
        read = added - lag if isinstance(added, int) and lag is not None else group.get("entries-read")
        if not isinstance(added, int) or not isinstance(read, int):
            return None, out
        return StreamCounters(added=added, read=read, pending=pending), out

    async def _ages(self, stream: str, group: str, last_id: Any) -> Metrics:
        """``queue.oldest_age``: Redis's own clock (TIME) minus the ID time of the first entry
        after ``last_id``; ``queue.oldest_in_flight_age``: the idle time of the first entry of the
        group's pending entries list (the one delivered longest ago, unless claimed since); each
        0 when no entry waits or none is in flight. One transaction, right after the counts."""
        if isinstance(last_id, bytes):
            last_id = last_id.decode()
        # without a last-delivered ID (never seen: XINFO always gives one) the stream's first entry is next
        start = f"({last_id}" if isinstance(last_id, str) else "-"
        clock, entries, in_flight = await self._transaction(lambda p: [
            p.time(), p.xrange(stream, min=start, max="+", count=1), p.xpending_range(stream, group, min="-", max="+", count=1),
        ])
        now = float(clock[0]) + float(clock[1]) / 1e6
        out: Metrics = {}
        # no entry after it, nothing pending: no wait at all, 0 (a rule on the age can let an empty stream scale in)
        out["queue.oldest_age"] = entry_age(_text(entries[0][0]) or "", now) if entries else 0.0
        out["queue.oldest_in_flight_age"] = float(in_flight[0]["time_since_delivered"]) / 1000 if in_flight else 0.0
        return out

    async def _count_after(self, stream: str, last_id: Any) -> int | None:
        """Entries after ``last_id`` counted with one bounded XRANGE; None beyond :data:`LAG_SCAN_LIMIT`."""
        if not isinstance(last_id, bytes | str):
            return None
        start = "(" + (last_id.decode() if isinstance(last_id, bytes) else last_id)
        (entries,) = await self._transaction(lambda p: [p.xrange(stream, min=start, max="+", count=LAG_SCAN_LIMIT + 1)])
        return len(entries) if len(entries) <= LAG_SCAN_LIMIT else None

    # ------------------------------------------------------------------ Redis calls

    async def _transaction(self, build: Callable[[Any], list[Any]]) -> list[Any]:
        s = self.settings
        where = redact_url(s.url)
        client = self._connected()
        try:
            async with asyncio.timeout(s.timeout + 0.5):  # redis-py bounds each socket call; this bounds the whole
                async with client.pipeline(transaction=True) as pipe:
                    build(pipe)
                    replies: list[Any] = await pipe.execute(raise_on_error=True)
                    return replies
        except TimeoutError:
            raise Transient(f"Redis at {where} timed out after {s.timeout:g}s") from None
        except redis.exceptions.AuthenticationError:
            raise Permanent(f"Redis at {where} refused the credentials{self._who()}") from None
        except redis.exceptions.ResponseError as e:
            text = str(e)
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise Permanent(f"Redis at {where} refused the request{self._who()}: {text.split()[0]}") from None
            if "WRONGTYPE" in text:
                raise Permanent(f"a key of {self.describe(s)} holds another type (WRONGTYPE)") from None
            if "EXECABORT" in text or "no such key" in text.lower():
                raise Permanent(text.splitlines()[0]) from None
            raise Transient(f"Redis at {where}: {text.splitlines()[0]}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            await self.close()  # a fresh connection next attempt
            raise Transient(f"cannot reach Redis at {where}: {reason(e)}") from None
        except redis.exceptions.RedisError as e:
            raise Transient(f"Redis at {where}: {reason(e)}") from None

    def _who(self) -> str:
        s = self.settings
        if s.password_env is None:
            return " (no password configured: set password_env)"
        return f" (user from {s.username_env})" if s.username_env else f" (password from {s.password_env})"

    def _connected(self) -> aioredis.Redis:
        if self._client is not None:
            return self._client
        s = self.settings
        password = env_secret(s.password_env, "password_env") if s.password_env else None
        username = env_secret(s.username_env, "username_env") if s.username_env else None
        ssl_options: dict[str, Any] = {}
        if s.url.startswith("rediss://"):
            ssl_options = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if s.tls is not None:
                s.tls.ssl_context(self.context)  # loads every file once: a clear error naming the bad one
                files = {k: str(self.context.path(v)) for k, v in s.tls.files().items()}
                ssl_options |= {
                    "ssl_ca_certs": files.get("ca_file"),
                    "ssl_certfile": files.get("cert_file"),
                    "ssl_keyfile": files.get("key_file"),
                }
        parts = urlsplit(s.url)
        self._client = aioredis.Redis(
            host=unquote(parts.hostname or "127.0.0.1"),
            port=parts.port or 6379,
            db=s.db,
            username=username,
            password=password,
            socket_timeout=s.timeout,
            socket_connect_timeout=s.timeout,
            # tenacity does the retrying, with its own bounds; redis-py must not retry underneath
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
            **ssl_options,
        )
        return self._client


def _routing_key(raw: bytes) -> str | None:
    """The routing key of one kombu ``unacked`` entry: JSON ``[message, exchange, routing_key]``."""
    try:
        entry = json.loads(raw)
        return entry[2] if isinstance(entry, list) and len(entry) >= 3 and isinstance(entry[2], str) else None
    except (ValueError, TypeError):
        return None


def entry_age(entry_id: str, now: float) -> float:
    """Seconds since the time in a stream entry's ID (``<milliseconds>-<n>``, Redis's clock when
    it made the ID); :class:`Missing` for an ID a producer chose that is no time (``1-0``, one in
    the future)."""
    ms, _, _ = entry_id.partition("-")
    if not ms.isdigit():
        return Missing(f"entry ID {entry_id[:40]!r} is not <milliseconds>-<sequence>")
    return age_since(int(ms) / 1000, now, f"entry {entry_id}'s ID time")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None

