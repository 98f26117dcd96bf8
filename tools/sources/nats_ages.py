"""``queue.oldest_age`` of a JetStream consumer: the stream's time of the first message after the
consumer's delivered stream sequence, i.e. the next message it will hand to a worker.

One ``$JS.API.STREAM.MSG.GET`` per subject filter asks for the first message at or after
``delivered.stream_seq + 1`` on that filter (``next_by_subj``): a filtered consumer's next
message is the next one *matching its filter*, not the next one of the stream, and messages
deleted in between (acknowledged under work-queue retention, or deleted one by one) are skipped
by the server. With several filters (``filter_subjects``) the earliest sequence found wins. The
plain ``STREAM.MSG.GET`` works on every stream; the direct get needs ``allow_direct``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client
from nats.js.api import ConsumerInfo, SequenceInfo

from docktor.tools.sdk.ages import age_since, rfc3339_epoch
from docktor.tools.sdk.errors import reason
from docktor.tools.sdk.metric_info import Missing

#: the JetStream API's subject prefix (no domain: the source reads the account's own JetStream)
API = "$JS.API"
#: JSNoMessageFoundErr (nats-server errors.json): nothing at or after that sequence on the subject
_NO_MESSAGE = 10037
#: what a consumer with no filter reads: every subject of the stream
_EVERYTHING = ">"

#: why it is absent when the counts came from ``/jsz`` (which holds no message)
FROM_MONITOR = "read from the monitoring endpoint (/jsz), which has no message times"


def filters(ci: ConsumerInfo) -> list[str]:
    """The consumer's subject filters (``filter_subject`` or ``filter_subjects``), else every subject."""
    config = ci.config
    many = [f for f in (getattr(config, "filter_subjects", None) or []) if f]
    one = getattr(config, "filter_subject", None)
    return many or ([one] if one else [_EVERYTHING])


async def oldest_age(nc: Client, stream: str, ci: ConsumerInfo, timeout: float, now: Any) -> float | str:
    """``queue.oldest_age`` for ``ci``'s consumer: seconds (or :class:`Missing` with the reason
    for a time that cannot be right or a get that failed), or the reason it is absent (a ``str``)
    when no message waits. ``now()`` is the wall clock, read once the answer is in."""
    if not ci.num_pending:
        return 0.0  # nothing waits: the oldest wait is none (as SQS's age of the oldest message on an empty queue)
    delivered = ci.delivered or SequenceInfo(consumer_seq=0, stream_seq=0)
    after = delivered.stream_seq
    try:
        async with asyncio.timeout(timeout):
            # return_exceptions: however one request ends, every other is awaited too, and no
            # exception is left that nobody retrieved
            answers = await asyncio.gather(*(_next(nc, stream, after + 1, f, timeout) for f in filters(ci)), return_exceptions=True)
    except TimeoutError:
        return Missing(f"no answer to STREAM.MSG.GET within {timeout:g}s")
    for answer in answers:
        if isinstance(answer, TimeoutError):
            return Missing(f"no answer to STREAM.MSG.GET within {timeout:g}s")
        if isinstance(answer, _GetFailed):
            return Missing(f"cannot read the message after sequence {after}: {answer}")
        if isinstance(answer, BaseException):
            raise answer
    messages = [m for m in answers if isinstance(m, tuple)]
    if not messages:
        # pending a moment ago, gone now (purged, or deleted by an ack under work-queue retention)
        return f"no message after sequence {after} any more (purged or taken since the consumer was read)"
    seq, stamp = min(messages)
    published = rfc3339_epoch(stamp)
    if published is None:
        return Missing(f"message {seq}'s time {stamp[:40]!r} is not an RFC 3339 time")
    return age_since(published, now(), f"message {seq}'s time")


class _GetFailed(Exception):
    """A STREAM.MSG.GET the server refused or answered with something else than a message."""


async def _next(nc: Client, stream: str, seq: int, subject: str, timeout: float) -> tuple[int, str] | None:
    """(sequence, time) of the first message at or after ``seq`` on ``subject``; None when none."""
    request = json.dumps({"seq": seq, "next_by_subj": subject}).encode()
    try:
        reply = await nc.request(f"{API}.STREAM.MSG.GET.{stream}", request, timeout=timeout)
        body = json.loads(reply.data)
    except TimeoutError:
        raise
    except Exception as e:  # no responders, a closed connection, a reply that is not JSON
        raise _GetFailed(reason(e)) from None
    if not isinstance(body, dict):
        raise _GetFailed("the answer is not a JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        if error.get("err_code") == _NO_MESSAGE:
            return None
        raise _GetFailed(str(error.get("description") or error)[:200])
    message = body.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("seq"), int) or not isinstance(message.get("time"), str):
        raise _GetFailed("the answer holds no message with a sequence and a time")
    return message["seq"], message["time"]
