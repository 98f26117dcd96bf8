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
import logging
import math
import re
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx2
from nats.aio.client import Client
from nats.js import JetStreamManager
from nats.js.api import ConsumerInfo
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from pydantic import field_validator, model_validator

from docktor.tools.sdk.errors import SourceError, reason
from docktor.tools.sdk.http_client import http_client
from docktor.tools.sdk.metric_info import Metrics, Missing, standard
from docktor.tools.sdk.plugin import Source
from docktor.tools.sdk.rates import RateTracker
from docktor.tools.sdk.retry import Permanent, Transient, Unavailable, retrying
from docktor.tools.sdk.settings import Context, EnvName, PluginSettings, PositiveSeconds, TlsSettings, env_secret, go_together
from docktor.tools.sdk.urls import check_url, url_setting
from docktor.tools.sources.nats_ages import FROM_MONITOR, oldest_age
from docktor.tools.sources.nats_counters import JetStreamCounters, from_api, from_jsz

log = logging.getLogger("docktor.nats")

# JetStream API error code (nats-server errors.json): the consumer, not the stream, is missing.
_CONSUMER_NOT_FOUND = 10014
#: how many names a "not found" error lists
_LISTED = 10

# A restarted server is picked up within about a second, i.e. by the next tick.
_RECONNECT_WAIT = 1
# Without pings a half-open TCP connection (peer gone without FIN) is noticed only after minutes.
_PING_INTERVAL = 10
#: seconds before a STREAM.MSG.GET the server's permissions refused is asked again
AGE_RETRY_S = 60.0
_NAME = re.compile(r"^[^\s.*>/\\]+$")
_SCHEMES = ("nats", "tls", "ws", "wss")


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
    monitor_url: Annotated[str, url_setting(("http", "https"), "an http(s) URL such as http://127.0.0.1:8222")] | None = None
    #: per call: connect, each API request, each monitoring request
    timeout: PositiveSeconds = 2.0
    #: names of environment variables holding credentials, never the credentials themselves
    user_env: EnvName | None = None
    password_env: EnvName | None = None
    token_env: EnvName | None = None
    creds_file: Path | None = None
    #: a private CA and/or a client certificate, for the client port and an https monitor_url
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("needs at least one server, e.g. nats://127.0.0.1:4222")
        for i, server in enumerate(servers, 1):
            try:
                check_url(server if "://" in server else f"nats://{server}", _SCHEMES, "nats://host:4222 (scheme nats, tls, ws or wss)")
            except ValueError as e:
                raise ValueError(f"server {i} of {len(servers)}: {e}" if len(servers) > 1 else str(e)) from None
        return ",".join(servers)

    @field_validator("stream", "consumer")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a JetStream name (no spaces, '.', '*', '>', '/' or '\\')")
        return value

    @model_validator(mode="after")
    def _one_auth_method(self) -> NatsSettings:
        go_together(self, "user_env", "password_env")
        methods = [self.user_env is not None, self.token_env is not None, self.creds_file is not None]
        if sum(methods) > 1:
            raise ValueError("use one of user_env/password_env, token_env or creds_file")
        return self

    @property
    def servers(self) -> list[str]:
        return self.url.split(",")


# --------------------------------------------------------------------------- the source


class NatsSource(Source[NatsSettings]):
    """``queue.*`` metrics for one JetStream stream and durable consumer."""

    Settings = NatsSettings
    provides = standard(
        "queue.pending", "queue.ack_pending", "queue.backlog", "queue.redelivered", "queue.waiting",
        "queue.lag", "queue.rate_in", "queue.rate_out", "queue.oldest_age",
    )

    def __init__(self, settings: NatsSettings, context: Context | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, context or Context(service="", base_dir=Path.cwd(), state_dir=Path.cwd()))
        self._clock = clock
        self._nc: Client | None = None
        self._jsm: JetStreamManager | None = None
        #: the monitoring endpoint's client, made when the fallback is first needed
        self._http: httpx2.AsyncClient | None = None
        #: the client's latest error since the connection was lost (or since connecting began)
        self._last_error: str | None = None
        #: an outage was logged and nothing has connected since (say it once, then when it recovers)
        self._outage_logged = False
        #: a cancelled read was logged and no read has succeeded since (once per outage, too)
        self._cancel_logged = False
        self._lock = asyncio.Lock()
        self._rates = RateTracker(JetStreamCounters, label=f"{settings.stream}/{settings.consumer}", log=log)
        #: "api" or "monitor": how the latest successful reading was obtained
        self.last_via: str | None = None
        #: why a metric the latest reading lacks is absent (``queue.oldest_age``: read from /jsz)
        self.why_absent: dict[str, str] = {}
        #: why the server refused STREAM.MSG.GET (its permissions), and when (``clock``) to ask again
        self._age_refused: str | None = None
        self._age_retry_at = -math.inf

    @property
    def last_reset(self) -> str | None:
        """Why the latest reading has no rates, when it has none (first read, purge, ...)."""
        return self._rates.last_reset

    @classmethod
    def describe(cls, settings: NatsSettings) -> str:
        return f"nats {settings.stream}/{settings.consumer}"

    # ------------------------------------------------------------------ public

    async def read(self) -> Metrics:
        async with self._lock:
            started = time.monotonic()
            try:
                metrics = await self._read()
            except asyncio.CancelledError:
                self._say_cancelled(time.monotonic() - started)
                raise
            self._cancel_logged = False
            return metrics

    def snapshot(self) -> dict[str, Any] | None:
        """The previous read's counters (the rate baseline), for the daemon's state file."""
        return self._rates.snapshot(self._clock())

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        """The baseline of a previous daemon: the first read after a restart has rates again,
        over the time since that daemon's last read (a purge or re-creation meanwhile is caught by
        the same checks as between two ticks)."""
        return self._rates.restore(data, elapsed, self._clock())

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
        nc, self._nc, self._jsm = self._nc, None, None
        if nc is not None:
            # close(), not drain(): this connection only sends requests, so there is no
            # subscribed work to finish, and nats-py's drain leaves unretrieved futures behind
            # when it times out against a server that is already gone.
            await _close_quietly(nc, self.settings.timeout)

    # ------------------------------------------------------------------ one reading

    async def _read(self) -> Metrics:
        s = self.settings
        ci: ConsumerInfo | None = None
        try:
            counters, ci = await retrying(self._read_api, deadline=s.timeout)
            via = "api"
        except Unavailable as api_error:  # a missing stream, consumer or credential is not tried elsewhere
            if s.monitor_url is None:
                raise
            if self.last_via != "monitor":  # once per switch, not every tick
                log.warning("JetStream API read failed (%s); reading %s/jsz instead", api_error, s.monitor_url)
            try:
                counters = await retrying(self._read_monitor, deadline=s.timeout)
            except SourceError as mon_error:
                raise SourceError(f"{api_error}; monitoring fallback: {mon_error}") from None
            via = "monitor"
        if self.last_via == "monitor" and via == "api":
            log.warning("JetStream API readable again (%s)", s.url)
        self.last_via = via
        metrics = self._metrics(counters, self._clock())
        # the next message's time, once the consumer says where it is: the same tick as the backlog
        age = await self._oldest_age(ci)
        self.why_absent = {"queue.oldest_age": age} if isinstance(age, str) else {}
        if not isinstance(age, str):
            metrics["queue.oldest_age"] = age
        return metrics

    async def _oldest_age(self, ci: ConsumerInfo | None) -> float | str:
        """The next message's age, or why not. A user not allowed STREAM.MSG.GET gets no answer
        but a permissions violation on the connection: after one, waiting ``timeout`` again every
        tick would slow each read, so the get is asked again only after :data:`AGE_RETRY_S`."""
        s = self.settings
        if ci is None or self._nc is None:
            return FROM_MONITOR
        if ci.num_pending and self._age_refused is not None and self._clock() < self._age_retry_at:
            return Missing(self._age_refused)
        age = await oldest_age(self._nc, s.stream, ci, s.timeout, time.time)
        if isinstance(age, Missing) and "msg.get" in (self._last_error or "").lower():
            # a request the user may not make goes unanswered: the server says why on the connection
            self._age_refused = f"{age.why} ({self._last_error}); asked again every {AGE_RETRY_S:.0f} s"
            self._age_retry_at = self._clock() + AGE_RETRY_S
            return Missing(self._age_refused)
        self._age_refused = None
        return age

    def _metrics(self, cur: JetStreamCounters, now: float) -> Metrics:
        out: Metrics = {
            "queue.pending": float(cur.num_pending),
            "queue.ack_pending": float(cur.num_ack_pending),
            "queue.backlog": float(cur.num_pending + cur.num_ack_pending),
            "queue.redelivered": float(cur.num_redelivered),
            "queue.waiting": float(cur.num_waiting),
            "queue.lag": float(max(0, cur.last_seq - cur.delivered_stream_seq)),
        }
        out.update(self._rates.update(cur, now))
        return out

    def _say_cancelled(self, after: float) -> None:
        """A read cancelled from outside (the daemon bounds each read by the check interval) ends
        with no error of its own to tell why: say it in the log, once per outage."""
        if not self._cancel_logged:
            self._cancel_logged = True
            log.warning(
                "nats %s: a read was cancelled after %.1fs with no answer yet (its own timeout is %gs)",
                self._where(), after, self.settings.timeout,
            )

    # ------------------------------------------------------------------ JetStream API

    async def _read_api(self) -> tuple[JetStreamCounters, ConsumerInfo]:
        s, t = self.settings, self.settings.timeout
        jsm = await self._connected()
        if self._nc is not None and self._nc.is_reconnecting:
            # The client would keep the requests until it reconnects or they time out: say now
            # why nothing can answer (another attempt in a moment may find it reconnected).
            raise Transient(f"connection to {s.url} lost, reconnecting: {self._last_error or 'no answer yet'}")
        try:
            async with asyncio.timeout(t):
                # gather, not separate tasks: however this ends (a time-out, the daemon cancelling
                # the read), both requests are cancelled and awaited, and no exception is left that
                # nobody retrieved (asyncio logs those with a traceback when it frees the task).
                answers = await asyncio.gather(
                    jsm.stream_info(s.stream), jsm.consumer_info(s.stream, s.consumer, timeout=t), return_exceptions=True
                )
        except TimeoutError:
            raise Transient(f"JetStream API timed out after {t:g}s ({self._where()})") from None
        si, ci = answers
        for answer in (si, ci):  # stream errors first: a missing stream also fails the consumer call
            if isinstance(answer, NotFoundError):
                raise await self._not_found(jsm, answer)
            if isinstance(answer, BaseException):
                raise self._classify(answer)
        assert not isinstance(si, BaseException) and not isinstance(ci, BaseException)  # (for mypy: raised above)
        return from_api(si, ci), ci

    async def _not_found(self, jsm: JetStreamManager, e: NotFoundError) -> Permanent:
        """What was not found, and what there is instead (``stream 'ORDER' not found (streams: ORDERS)``)."""
        s = self.settings
        consumer = e.err_code == _CONSUMER_NOT_FOUND
        what = f"consumer {s.consumer!r} not found on stream {s.stream!r}" if consumer else f"stream {s.stream!r} not found"
        try:
            async with asyncio.timeout(s.timeout):
                if consumer:
                    names = sorted(str(c.name) for c in await jsm.consumers_info(s.stream))
                else:
                    names = sorted(str(i.config.name) for i in await jsm.streams_info())
        except Exception as listing:  # the listing is a courtesy: the error stands without it
            log.debug("nats %s: cannot list what there is: %s", s.url, reason(listing))
            return Permanent(what)
        shown = ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
        return Permanent(f"{what} ({'consumers' if consumer else 'streams'}: {shown or 'none'})")

    def _classify(self, e: BaseException) -> Exception:
        t = self.settings.timeout
        if isinstance(e, ServiceUnavailableError):
            return Transient(f"JetStream not available ({self._where()})")
        if isinstance(e, BadRequestError):
            return Permanent(f"JetStream rejected the request: {e.description}")
        if isinstance(e, APIError):
            return Transient(f"JetStream API error {e.code}: {e.description}")
        if isinstance(e, TimeoutError):
            return Transient(f"JetStream API timed out after {t:g}s ({self._where()})")
        return Transient(f"JetStream API failed: {reason(e)} ({self._where()})")

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
            options["tls"] = s.tls.ssl_context(self.context)
        self._last_error = None
        failed = asyncio.Event()
        errors = 0
        established = False

        async def on_error(e: Exception) -> None:
            nonlocal errors
            errors += 1
            self._last_error = reason(e)
            if errors >= len(s.servers):  # every server of the list has had its chance
                failed.set()
            log.debug("nats %s: %s", s.url, self._last_error)
            if established and nc.is_reconnecting and not self._outage_logged:  # once per outage
                log.warning("nats %s: connection lost, reconnecting every %gs: %s", s.url, _RECONNECT_WAIT, self._last_error)
                self._outage_logged = True

        async def on_disconnect() -> None:
            # nats-py also calls this when a first connect that never succeeded is closed: only a
            # connection that was up can be "disconnected"
            if established:
                self._last_error = None  # the causes of this outage, not of an earlier one
                log.info("nats %s: disconnected; reconnecting", s.url)

        async def on_reconnect() -> None:
            log.log(logging.WARNING if self._outage_logged else logging.INFO, "nats %s: reconnected", s.url)
            self._outage_logged = False

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
            cause = self._last_error or (f"no answer within {t:g}s" if connect not in done else "connection failed")
            if not self._outage_logged:  # once per outage, not once per attempt and tick
                log.warning("nats %s: cannot connect: %s (retrying every tick)", s.url, cause)
                self._outage_logged = True
            raise Transient(f"cannot connect to {s.url}: {cause}")
        established = True
        if self._outage_logged:
            log.warning("nats %s: connected again", s.url)
            self._outage_logged = False
        self._nc, self._jsm = nc, nc.jsm(timeout=t)
        return self._jsm

    def _auth_options(self) -> dict[str, Any]:
        s = self.settings
        if s.user_env is not None and s.password_env is not None:
            return {"user": env_secret(s.user_env, "user_env"), "password": env_secret(s.password_env, "password_env")}
        if s.token_env is not None:
            return {"token": env_secret(s.token_env, "token_env")}
        if s.creds_file is not None:
            if not s.creds_file.is_file():
                raise Permanent(f"creds_file {str(s.creds_file)!r} does not exist")
            return {"user_credentials": str(s.creds_file)}
        return {}

    # ------------------------------------------------------------------ HTTP monitoring

    async def _read_monitor(self) -> JetStreamCounters:
        s, t = self.settings, self.settings.timeout
        url = f"{s.monitor_url}/jsz?consumers=true&config=true"
        if self._http is None:  # a TLS file that cannot be loaded is a SourceError: final, like a missing credential
            self._http = http_client(s.tls if url.startswith("https") else None, self.context, t)
        try:
            async with asyncio.timeout(t + 0.5):  # httpx2 bounds each phase; this bounds them all
                r = await self._http.get(url)
            if r.status_code != 200:
                raise Transient(f"{url}: HTTP {r.status_code}")
            body = r.json()
        except (TimeoutError, httpx2.TimeoutException):
            raise Transient(f"{url}: timed out after {t:g}s") from None
        except (httpx2.HTTPError, ssl.SSLError, OSError, ValueError) as e:
            raise Transient(f"{url}: {reason(e)}") from None
        return from_jsz(body, s.stream, s.consumer)


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
