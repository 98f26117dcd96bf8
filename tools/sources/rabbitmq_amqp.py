"""RabbitMQ over AMQP 0-9-1, for the RabbitMQ source: a passive ``queue.declare`` (the exact ready
and consumer counts, no statistics lag), and telling an AMQP listener from an HTTP one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

from docktor.tools.sdk.errors import one_line, redact_url
from docktor.tools.sdk.metric_info import Metrics
from docktor.tools.sdk.retry import Permanent, Transient

log = logging.getLogger("docktor.rabbitmq")


class QueueNotFound(Permanent):
    """The queue (or its vhost) does not exist."""


class PassiveDeclare:
    """``queue.pending`` and ``queue.consumers`` of one queue from a passive ``queue.declare`` at
    ``url`` (``amqp(s)://host[:port]``), on one AMQP connection kept between reads: a broker logs
    every connection it accepts and closes, and a connection per tick filled its log. A failed
    read closes the connection; the next one opens another."""

    def __init__(self, url: str, vhost: str, queue: str, context: ssl.SSLContext | None) -> None:
        self.url, self.vhost, self.queue, self.context = url, vhost, queue, context
        self.where = redact_url(url)
        self._connection: Any = None
        self._channel: Any = None
        self._password = ""

    async def read(self, credentials: tuple[str, str] | None, timeout: float) -> Metrics:
        """One passive declare within ``timeout`` (connecting first when there is no connection)."""
        import aiormq.exceptions
        from pamqp.commands import Queue

        queue, vhost, where = self.queue, self.vhost, self.where
        try:
            Queue.Declare(queue=queue, passive=True)  # the AMQP client's own check of the name, before connecting
        except ValueError as e:
            # RabbitMQ and its management API take names an AMQP client refuses (a space, a slash)
            raise Permanent(f"queue {queue!r} cannot be named over AMQP: the AMQP client refuses it ({e})") from None
        try:
            async with asyncio.timeout(timeout):
                kept = self._connection is not None and not self._connection.is_closed
                try:
                    ok = await (await self._open(credentials)).queue_declare(queue, passive=True)
                except (aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError):
                    if not kept:
                        raise
                    # the kept connection went away between two reads (a broker restart, a
                    # closed idle connection): one fresh one, within the same timeout
                    await self.close(timeout)
                    ok = await (await self._open(credentials)).queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None  # the broker closes the channel on a 404; the connection stays
            raise QueueNotFound(f"queue {queue!r} not found in vhost {vhost!r} ({where})") from None
        except BaseException as e:
            await self.close(timeout)
            if isinstance(e, TimeoutError):
                raise Transient(f"AMQP {where} timed out after {timeout:g}s") from None
            if isinstance(e, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
                raise Permanent(f"AMQP {where} refused the credentials") from None
            if isinstance(e, aiormq.exceptions.ConnectionNotAllowed):
                raise Permanent(f"AMQP {where}: the user may not use vhost {vhost!r}") from None
            if isinstance(e, aiormq.exceptions.AMQPError | OSError | ConnectionError):
                raise Transient(f"cannot read {queue!r} over AMQP at {where}: {_scrub(one_line(e), self._password)}") from None
            raise
        return {"queue.pending": float(ok.message_count), "queue.consumers": float(ok.consumer_count)}

    async def _open(self, credentials: tuple[str, str] | None) -> Any:
        import aiormq

        if self._connection is None or self._connection.is_closed:
            self._channel = None
            parts = urlsplit(self.url)
            user, self._password = credentials if credentials is not None else ("guest", "guest")
            path = "" if self.vhost == "/" else quote(self.vhost, safe="")  # aiormq reads an empty path as "/"
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
            host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
            full = f"{parts.scheme}://{quote(user, safe='')}:{quote(self._password, safe='')}@{host}:{port}/{path}"
            self._connection = (
                await aiormq.connect(full, context=self.context) if self.context is not None else await aiormq.connect(full)
            )
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        return self._channel

    async def close(self, timeout: float = 2.0) -> None:
        """Close the connection, if any (best effort: the reading is what matters)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await connection.close()
        except Exception as e:
            log.debug("AMQP close failed: %s", _scrub(one_line(e), self._password))


def _scrub(text: str, secret: str) -> str:
    return redact_url(text.replace(secret, "***") if secret else text)


async def speaks_amqp(url: str, timeout: float) -> bool:
    """Whether the host and port of a plain ``http://`` URL answer AMQP 0-9-1's protocol header
    (with ``connection.start``, or with the header of the version they speak)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            try:
                writer.write(b"AMQP\x00\x00\x09\x01")
                await writer.drain()
                head = await reader.read(8)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return head.startswith(b"AMQP") or head[:3] == b"\x01\x00\x00"  # a method frame on channel 0
