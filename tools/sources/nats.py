"""NATS JetStream metric source: one stream + one durable consumer -> ``queue.*`` metrics.

Reads stream info and consumer info through the JetStream API on one long-lived connection, and,
if ``monitor_url`` is set, falls back to the server's HTTP monitoring endpoint (``/jsz``, the way
KEDA's nats-jetstream scaler reads it) when the API cannot be reached.

Rates come from two consecutive reads. JetStream counters are not monotonic in real life (purges,
deleted and re-created streams, restored backups), so every jump that is not traffic resets the
baseline and the rate is omitted for that tick: a missing rate is honest, a spike is not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.js import JetStreamManager
from nats.js.api import SequenceInfo
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from pydantic import field_validator, model_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from docktor.tools.sdk import (
    Context,
    Metrics,
    PluginSettings,
    PositiveSeconds,
    Source,
    SourceError,
    TlsSettings,
    one_line,
    redact_url,
    standard,
)

log = logging.getLogger("docktor.nats")

# JetStream API error codes (nats-server errors.json).
_STREAM_NOT_FOUND = 10059
_CONSUMER_NOT_FOUND = 10014

# Short waits between attempts: the whole read must stay well inside one check interval.
_ATTEMPTS = 3
_WAIT = wait_exponential(multiplier=0.1, max=0.5)
# A restarted server is picked up within about a second, i.e. by the next tick.
_RECONNECT_WAIT = 1
# Without pings a half-open TCP connection (peer gone without FIN) is noticed only after minutes.
_PING_INTERVAL = 10
_NAME = re.compile(r"^[^\s.*>/\\]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- settings


class NatsSettings(PluginSettings):
    """The ``queue:`` block of a service with ``kind: nats``."""

    kind: Literal["nats"]
    #: one server or a comma-separated list (a cluster); no credentials in the URL
    url: str = "nats://127.0.0.1:4222"
    stream: str
    #: durable consumer whose workers are being scaled
    consumer: str
    #: informational (Go Docktor config compatibility); the consumer defines what it reads
    subject: str | None = None
    #: HTTP monitoring endpoint, e.g. http://127.0.0.1:8222; used when the JetStream API fails
    monitor_url: str | None = None
    #: per call: connect, each API request, each monitoring request
    timeout: PositiveSeconds = 2.0
    #: names of environment variables holding credentials, never the credentials themselves
    user_env: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    creds_file: Path | None = None
    #: a private CA and/or a client certificate, for the client port and an https monitor_url
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("needs at least one server, e.g. nats://127.0.0.1:4222")
        for s in servers:
            parts = urlsplit(s if "://" in s else f"nats://{s}")
            if parts.scheme not in ("nats", "tls", "ws", "wss"):
                raise ValueError(f"{s!r}: scheme must be nats://, tls://, ws:// or wss://")
            if parts.username or parts.password:
                raise ValueError(f"{redact_url(s)!r}: no credentials in the URL; use user_env/password_env or token_env")
            if not parts.hostname:
                raise ValueError(f"{s!r}: no host")
        return ",".join(servers)

    @field_validator("monitor_url")
    @classmethod
    def _check_monitor_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r}: must be an http(s) URL such as http://127.0.0.1:8222")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL")
        return value.rstrip("/")

    @field_validator("stream", "consumer")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a JetStream name (no spaces, '.', '*', '>', '/' or '\\')")
        return value

    @field_validator("user_env", "password_env", "token_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (the value goes in the environment)")
        return value

    @model_validator(mode="after")
    def _one_auth_method(self) -> NatsSettings:
        if (self.user_env is None) != (self.password_env is None):
            raise ValueError("user_env and password_env go together")
        methods = [self.user_env is not None, self.token_env is not None, self.creds_file is not None]
        if sum(methods) > 1:
            raise ValueError("use one of user_env/password_env, token_env or creds_file")
        return self

    @property
    def servers(self) -> list[str]:
        return self.url.split(",")


# --------------------------------------------------------------------------- one reading


@dataclass(frozen=True)
class Snapshot:
    """The counters of one read, whichever way they were obtained."""

    stream_created: dt.datetime | None
    consumer_created: dt.datetime | None
    retention: str | None
    first_seq: int
    last_seq: int
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    num_waiting: int
    delivered_stream_seq: int
    delivered_consumer_seq: int
    ack_floor_stream_seq: int
    ack_floor_consumer_seq: int


def _discontinuity(prev: Snapshot, cur: Snapshot) -> str | None:
    """Why the counters between ``prev`` and ``cur`` are not traffic, or None when they are."""
    if prev.stream_created != cur.stream_created:
        return "stream re-created"
    if prev.consumer_created != cur.consumer_created:
        return "consumer re-created"
    for name in ("last_seq", "delivered_stream_seq", "delivered_consumer_seq", "ack_floor_stream_seq", "ack_floor_consumer_seq"):
        if getattr(cur, name) < getattr(prev, name):
            return f"{name} went backwards"
    if cur.delivered_stream_seq > prev.delivered_stream_seq and cur.delivered_consumer_seq == prev.delivered_consumer_seq:
        # The server moved the consumer past messages it never delivered: a purge or limits discard.
        return "consumer skipped undelivered messages (purge or discard)"
    if (
        cur.retention == "limits"
        and cur.first_seq - 1 > prev.ack_floor_stream_seq
        and cur.ack_floor_stream_seq > prev.ack_floor_stream_seq
    ):
        # Under limits retention an ack never removes a message, so messages above the old ack
        # floor vanished (purge, discard, delete) and the floor was dragged along, not acked.
        return "messages above the ack floor were removed (purge or discard)"
    return None


# --------------------------------------------------------------------------- the source


class QueueNotReadable(SourceError):
    """A reading failed in a way retrying or another path cannot fix (missing stream, consumer,
    credential variable); raised without trying the monitoring fallback."""


class _Transient(Exception):
    """One attempt failed in a way another attempt may fix."""


class _Permanent(Exception):
    """One attempt failed in a way retrying cannot fix (missing stream, consumer or credential)."""


class NatsSource(Source[NatsSettings]):
    """``queue.*`` metrics for one JetStream stream and durable consumer."""

    Settings = NatsSettings
    provides = standard(
        "queue.pending", "queue.ack_pending", "queue.backlog", "queue.redelivered", "queue.waiting",
        "queue.lag", "queue.rate_in", "queue.rate_out",
    )

    def __init__(self, settings: NatsSettings, context: Context | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, context or Context(service="", base_dir=Path.cwd(), state_dir=Path.cwd()))
        self._clock = clock
        self._nc: Client | None = None
        self._jsm: JetStreamManager | None = None
        self._last_error: str | None = None
        #: a connection failure was logged and nothing has connected since (say it once, then when it recovers)
        self._unreachable_logged = False
        self._lock = asyncio.Lock()
        self._prev: Snapshot | None = None
        self._prev_at = 0.0
        #: "api" or "monitor": how the latest successful reading was obtained
        self.last_via: str | None = None
        #: why the latest reading has no rates, when it has none (first read, purge, ...)
        self.last_reset: str | None = None

    @classmethod
    def describe(cls, settings: NatsSettings) -> str:
        return f"nats {settings.stream}/{settings.consumer}"

    @classmethod
    def check(cls, settings: NatsSettings, context: Context) -> list[str]:
        return settings.tls.missing(context) if settings.tls else []

    # ------------------------------------------------------------------ public

    async def read(self) -> Metrics:
        async with self._lock:
            try:
                snap = await self._retrying(self._read_api)
                via = "api"
            except SourceError as api_error:
                if self.settings.monitor_url is None or isinstance(api_error, QueueNotReadable):
                    raise
                if self.last_via != "monitor":  # once per switch, not every tick
                    log.warning("JetStream API read failed (%s); reading %s/jsz instead", api_error, self.settings.monitor_url)
                try:
                    snap = await self._retrying(self._read_monitor)
                except SourceError as mon_error:
                    raise SourceError(f"{api_error}; monitoring fallback: {mon_error}") from None
                via = "monitor"
            if self.last_via == "monitor" and via == "api":
                log.warning("JetStream API readable again (%s)", self.settings.url)
            self.last_via = via
            return self._metrics(snap, self._clock())

    def snapshot(self) -> dict[str, Any] | None:
        """The previous read's counters (the rate baseline), for the daemon's state file."""
        if self._prev is None:
            return None
        counters = {f.name: getattr(self._prev, f.name) for f in fields(Snapshot)}
        for key in ("stream_created", "consumer_created"):
            if counters[key] is not None:
                counters[key] = counters[key].isoformat()
        return {"v": 1, "age_s": self._clock() - self._prev_at, "counters": counters}

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        """The baseline of a previous daemon: the first read after a restart has rates again,
        over the time since that daemon's last read (a purge or re-creation meanwhile is caught by
        the same checks as between two ticks)."""
        if data.get("v") != 1:
            return False
        c = data["counters"]
        def when(key: str) -> dt.datetime | None:
            return None if c[key] is None else dt.datetime.fromisoformat(str(c[key]))

        ints = {f.name: int(c[f.name]) for f in fields(Snapshot) if f.name not in ("stream_created", "consumer_created", "retention")}
        retention = c["retention"]
        age = float(data["age_s"]) + elapsed
        if not (0 <= age < float("inf")) or (retention is not None and not isinstance(retention, str)):
            return False
        self._prev = Snapshot(when("stream_created"), when("consumer_created"), retention, **ints)
        self._prev_at = self._clock() - age
        return True

    async def close(self) -> None:
        nc, self._nc, self._jsm = self._nc, None, None
        if nc is not None:
            # close(), not drain(): this connection only sends requests, so there is no
            # subscribed work to finish, and nats-py's drain leaves unretrieved futures behind
            # when it times out against a server that is already gone.
            await _close_quietly(nc, self.settings.timeout)

    # ------------------------------------------------------------------ metrics

    def _metrics(self, cur: Snapshot, now: float) -> Metrics:
        out: Metrics = {
            "queue.pending": float(cur.num_pending),
            "queue.ack_pending": float(cur.num_ack_pending),
            "queue.backlog": float(cur.num_pending + cur.num_ack_pending),
            "queue.redelivered": float(cur.num_redelivered),
            "queue.waiting": float(cur.num_waiting),
            "queue.lag": float(max(0, cur.last_seq - cur.delivered_stream_seq)),
        }
        prev, elapsed = self._prev, now - self._prev_at
        reset = "first reading" if prev is None else _discontinuity(prev, cur)
        if reset is None and elapsed <= 0:
            # No time has passed: keep the older baseline so the next rate spans a real interval.
            self.last_reset = "no time elapsed since the previous reading"
            return out
        if reset is None:
            assert prev is not None
            out["queue.rate_in"] = (cur.last_seq - prev.last_seq) / elapsed
            out["queue.rate_out"] = (cur.ack_floor_stream_seq - prev.ack_floor_stream_seq) / elapsed
        elif prev is not None:
            log.info("%s/%s: %s; rates resume next tick", self.settings.stream, self.settings.consumer, reset)
        self.last_reset = reset
        self._prev, self._prev_at = cur, now
        return out

    # ------------------------------------------------------------------ retries

    async def _retrying(self, attempt_fn: Callable[[], Any]) -> Snapshot:
        t = self.settings.timeout
        retrying = AsyncRetrying(
            # Quick failures (refused, 503) get three attempts; an attempt that used up the
            # whole timeout is not repeated: the next tick is the retry, and a read stays
            # near one timeout per path.
            stop=stop_after_attempt(_ATTEMPTS) | stop_after_delay(t),
            wait=_WAIT,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await attempt_fn()  # type: ignore[no-any-return]
        except _Permanent as e:
            raise QueueNotReadable(str(e)) from None
        except _Transient as e:
            raise SourceError(str(e)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ JetStream API

    async def _read_api(self) -> Snapshot:
        s, t = self.settings, self.settings.timeout
        jsm = await self._connected()
        stream_task = asyncio.ensure_future(jsm.stream_info(s.stream))
        consumer_task = asyncio.ensure_future(jsm.consumer_info(s.stream, s.consumer, timeout=t))
        tasks = (stream_task, consumer_task)
        try:
            async with asyncio.timeout(t):
                await asyncio.wait(tasks)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            # Collect both, so that neither leaves an exception nobody retrieved: asyncio logs
            # those, with a traceback, whenever the garbage collector frees the task.
            await asyncio.gather(*tasks, return_exceptions=True)
            raise _Transient(f"JetStream API timed out after {t:g}s ({self._where()})") from None
        errors = [task.exception() for task in tasks]  # both retrieved, for the same reason
        # stream errors first: a missing stream also fails the consumer call
        for error in errors:
            if error is not None:
                raise self._classify(error)
        si, ci = stream_task.result(), consumer_task.result()
        delivered = ci.delivered or SequenceInfo(consumer_seq=0, stream_seq=0)
        floor = ci.ack_floor or SequenceInfo(consumer_seq=0, stream_seq=0)
        return Snapshot(
            stream_created=si.created,
            consumer_created=ci.created,
            retention=_enum_value(si.config.retention),
            first_seq=si.state.first_seq,
            last_seq=si.state.last_seq,
            num_pending=ci.num_pending or 0,
            num_ack_pending=ci.num_ack_pending or 0,
            num_redelivered=ci.num_redelivered or 0,
            num_waiting=ci.num_waiting or 0,
            delivered_stream_seq=delivered.stream_seq,
            delivered_consumer_seq=delivered.consumer_seq,
            ack_floor_stream_seq=floor.stream_seq,
            ack_floor_consumer_seq=floor.consumer_seq,
        )

    def _classify(self, e: BaseException) -> Exception:
        s, t = self.settings, self.settings.timeout
        if isinstance(e, NotFoundError):
            if e.err_code == _CONSUMER_NOT_FOUND:
                return _Permanent(f"consumer {s.consumer!r} not found on stream {s.stream!r}")
            return _Permanent(f"stream {s.stream!r} not found")
        if isinstance(e, ServiceUnavailableError):
            return _Transient(f"JetStream not available ({self._where()})")
        if isinstance(e, BadRequestError):
            return _Permanent(f"JetStream rejected the request: {e.description}")
        if isinstance(e, APIError):
            return _Transient(f"JetStream API error {e.code}: {e.description}")
        if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
            return _Transient(f"JetStream API timed out after {t:g}s ({self._where()})")
        return _Transient(f"JetStream API failed: {_one_line(e)} ({self._where()})")

    def _where(self) -> str:
        if self._nc is not None and self._nc.is_reconnecting:
            return f"reconnecting to {self.settings.url}" + (f", last error: {self._last_error}" if self._last_error else "")
        return self.settings.url

    async def _connected(self) -> JetStreamManager:
        if self._nc is not None and not self._nc.is_closed and self._jsm is not None:
            return self._jsm
        self._nc = self._jsm = None
        s, t = self.settings, self.settings.timeout
        options = self._auth_options()
        if s.tls is not None:
            # with a context nats-py upgrades to TLS whatever the scheme (the server asks for it)
            options["tls"] = self._ssl_context()
        self._last_error = None
        failed = asyncio.Event()
        errors = 0

        async def on_error(e: Exception) -> None:
            nonlocal errors
            errors += 1
            self._last_error = _one_line(e)
            if errors >= len(s.servers):  # every server of the list has had its chance
                failed.set()
            log.debug("nats %s: %s", s.url, self._last_error)

        established = False

        async def on_disconnect() -> None:
            # nats-py also calls this when a first connect that never succeeded is closed: only a
            # connection that was up can be "disconnected"
            if established:
                log.info("nats %s: disconnected; reconnecting", s.url)

        async def on_reconnect() -> None:
            log.info("nats %s: reconnected", s.url)

        nc = Client()
        connect = asyncio.ensure_future(
            nc.connect(
                servers=s.servers,
                connect_timeout=t,  # type: ignore[arg-type]  # annotated int, used as a float timeout
                # Never give up reconnecting: the daemon outlives NATS restarts; each read has
                # its own timeout, so a down server shows up as missing metrics, not a hang.
                max_reconnect_attempts=-1,
                reconnect_time_wait=_RECONNECT_WAIT,
                ping_interval=_PING_INTERVAL,
                max_outstanding_pings=2,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                name="docktor",
                **options,
            )
        )
        gave_up = asyncio.ensure_future(failed.wait())
        ok = False
        done: set[asyncio.Future[Any]] = set()
        try:
            # With max_reconnect_attempts=-1 the first connect would retry forever: stop it once
            # each server failed (the retry policy decides about another attempt) or at the timeout.
            done, _ = await asyncio.wait({connect, gave_up}, timeout=t, return_when=asyncio.FIRST_COMPLETED)
            ok = connect in done and not connect.cancelled() and connect.exception() is None
        finally:
            gave_up.cancel()
            if not ok:  # also when the caller cancels us: no connect loop may outlive this call
                connect.cancel()
                await _close_quietly(nc, t)
        if not ok:
            reason = self._last_error or (f"no answer within {t:g}s" if connect not in done else "connection failed")
            if not self._unreachable_logged:  # once per outage, not once per attempt and tick
                log.warning("nats %s: cannot connect: %s (retrying every tick)", s.url, reason)
                self._unreachable_logged = True
            raise _Transient(f"cannot connect to {s.url}: {reason}")
        established = True
        if self._unreachable_logged:
            log.warning("nats %s: connected again", s.url)
            self._unreachable_logged = False
        self._nc, self._jsm = nc, nc.jsm(timeout=t)
        return self._jsm

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.settings.tls is not None
        try:
            return self.settings.tls.ssl_context(self.context)
        except SourceError as e:
            raise _Permanent(str(e)) from None

    def _auth_options(self) -> dict[str, Any]:
        s = self.settings
        if s.user_env is not None and s.password_env is not None:
            return {"user": _env(s.user_env, "user_env"), "password": _env(s.password_env, "password_env")}
        if s.token_env is not None:
            return {"token": _env(s.token_env, "token_env")}
        if s.creds_file is not None:
            if not s.creds_file.is_file():
                raise _Permanent(f"creds_file {str(s.creds_file)!r} does not exist")
            return {"user_credentials": str(s.creds_file)}
        return {}

    # ------------------------------------------------------------------ HTTP monitoring

    async def _read_monitor(self) -> Snapshot:
        s, t = self.settings, self.settings.timeout
        url = f"{s.monitor_url}/jsz?consumers=true&config=true"
        try:
            # urllib's own timeout bounds the thread; the outer one bounds us if it does not.
            ctx = self._ssl_context() if s.tls is not None and url.startswith("https") else None
            body = await asyncio.wait_for(asyncio.to_thread(_get_json, url, t, ctx), t + 0.5)
        except TimeoutError:
            raise _Transient(f"{url}: timed out after {t:g}s") from None
        except urllib.error.HTTPError as e:
            raise _Transient(f"{url}: HTTP {e.code}") from None
        except (OSError, ValueError) as e:
            raise _Transient(f"{url}: {_one_line(e)}") from None
        return self._from_jsz(body)

    def _from_jsz(self, body: Any) -> Snapshot:
        s = self.settings
        try:
            streams = [
                sd
                for acc in body.get("account_details") or []
                for sd in acc.get("stream_detail") or []
                if sd.get("name") == s.stream
            ]
            if not streams:
                raise _Permanent(f"stream {s.stream!r} not found (monitoring)")
            if len(streams) > 1:
                raise _Permanent(f"stream {s.stream!r} exists in several accounts (monitoring cannot tell which)")
            sd = streams[0]
            cd = next((c for c in sd.get("consumer_detail") or [] if c.get("name") == s.consumer), None)
            if cd is None:
                raise _Permanent(f"consumer {s.consumer!r} not found on stream {s.stream!r} (monitoring)")
            state, delivered, floor = sd["state"], cd["delivered"], cd["ack_floor"]
            return Snapshot(
                stream_created=_time(sd.get("created")),
                consumer_created=_time(cd.get("created")),
                retention=(sd.get("config") or {}).get("retention"),
                first_seq=int(state["first_seq"]),
                last_seq=int(state["last_seq"]),
                num_pending=int(cd.get("num_pending", 0)),
                num_ack_pending=int(cd.get("num_ack_pending", 0)),
                num_redelivered=int(cd.get("num_redelivered", 0)),
                num_waiting=int(cd.get("num_waiting", 0)),
                delivered_stream_seq=int(delivered["stream_seq"]),
                delivered_consumer_seq=int(delivered["consumer_seq"]),
                ack_floor_stream_seq=int(floor["stream_seq"]),
                ack_floor_consumer_seq=int(floor["consumer_seq"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _Transient(f"unexpected /jsz answer: {_one_line(e)}") from None


async def _close_quietly(nc: Client, timeout: float) -> None:
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.close(), timeout)
    except asyncio.CancelledError:
        # nats-py's close() can raise CancelledError of its own (a reconnect loop it cancels while
        # the socket is half-closed); only a cancellation of *our* task may propagate.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("close of %s interrupted by nats-py", nc.connected_url)
    except Exception as e:
        log.debug("close failed: %s", e)


def _get_json(url: str, timeout: float, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
        return json.loads(r.read())


def _time(value: Any) -> dt.datetime | None:
    # /jsz and the API give the same RFC 3339 instant; both are compared at microsecond precision.
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _env(name: str, field: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise _Permanent(f"environment variable {name} ({field}) is not set")
    return value


def _one_line(e: BaseException) -> str:
    """The first line of the message alone (the callers say what failed)."""
    text = str(e).strip().splitlines()
    return text[0] if text and text[0] else one_line(e)
