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


async def passive_declare(
    url: str, vhost: str, queue: str, credentials: tuple[str, str] | None, context: ssl.SSLContext | None, timeout: float
) -> Metrics:
    """``queue.pending`` and ``queue.consumers`` of ``queue`` from a passive ``queue.declare`` at
    ``url`` (``amqp(s)://host[:port]``): one connection, closed again, all within ``timeout``."""
    import aiormq  # only the AMQP reads need it
    import aiormq.exceptions
    from pamqp.commands import Queue

    where = redact_url(url)
    try:
        Queue.Declare(queue=queue, passive=True)  # the AMQP client's own check of the name, before connecting
    except ValueError as e:
        # RabbitMQ and its management API take names an AMQP client refuses (a space, a slash)
        raise Permanent(f"queue {queue!r} cannot be named over AMQP: the AMQP client refuses it ({e})") from None
    parts = urlsplit(url)
    user, password = credentials if credentials is not None else ("guest", "guest")
    path = "" if vhost == "/" else quote(vhost, safe="")  # aiormq reads an empty path as "/"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    full = f"{parts.scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{path}"
    connection: Any = None
    try:
        async with asyncio.timeout(timeout):
            connection = await aiormq.connect(full, context=context) if context is not None else await aiormq.connect(full)
            channel = await connection.channel()
            ok = await channel.queue_declare(queue, passive=True)
    except TimeoutError:
        raise Transient(f"AMQP {where} timed out after {timeout:g}s") from None
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise QueueNotFound(f"queue {queue!r} not found in vhost {vhost!r} ({where})") from None
    except (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError):
        raise Permanent(f"AMQP {where} refused the credentials") from None
    except aiormq.exceptions.ConnectionNotAllowed:
        raise Permanent(f"AMQP {where}: the user may not use vhost {vhost!r}") from None
    except (aiormq.exceptions.AMQPError, OSError, ConnectionError) as e:
        raise Transient(f"cannot read {queue!r} over AMQP at {where}: {_scrub(one_line(e), password)}") from None
    finally:
        if connection is not None:
            try:
                async with asyncio.timeout(timeout):
                    await connection.close()
            except Exception as e:  # closing is best effort; the reading is what matters
                log.debug("AMQP close failed: %s", _scrub(one_line(e), password))
    return {"queue.pending": float(ok.message_count), "queue.consumers": float(ok.consumer_count)}

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
