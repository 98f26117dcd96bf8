"""Retries for a source's remote calls: a few quick attempts within one deadline, then one line saying why.

An attempt says how it failed by what it raises:

* :class:`Transient` when another attempt may fix it (connection refused, a time-out, HTTP 503):
  :func:`retrying` tries again after a short wait, and after the last attempt raises
  :class:`Unavailable` with the last attempt's message;
* :class:`Permanent` (or any other :class:`SourceError`, such as :func:`env_secret`'s) when
  retrying cannot fix it (a missing queue, refused credentials, an unset variable): raised at
  once, as it is.

Anything else an attempt raises is a bug and propagates unchanged. The waits are short and the
attempts few because a read must end well inside one check interval: the next tick is the retry
that matters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from docktor.tools.sdk.errors import SourceError

__all__ = ["ATTEMPTS", "Permanent", "Transient", "Unavailable", "retrying"]

T = TypeVar("T")

#: attempts per read: a quick failure (refused, 503) is tried three times
ATTEMPTS = 3
#: waits between attempts: 0.1 s, then 0.2 s (capped at 0.5 s)
_WAIT = wait_exponential(multiplier=0.1, max=0.5)


class Transient(Exception):
    """One attempt failed in a way another attempt may fix; the message says what and where."""


class Permanent(SourceError):
    """A reading failed in a way retrying, or another way of reading, cannot fix (a missing
    queue, refused credentials); raised by :func:`retrying` at once."""


class Unavailable(SourceError):
    """Every attempt failed in a way another might have fixed (the peer is down, slow or
    overloaded): the last attempt's message. A source with a second way of reading (NATS's
    monitoring endpoint) tries it on this error only."""


async def retrying(attempt: Callable[[], Awaitable[T]], *, deadline: float, attempts: int = ATTEMPTS) -> T:
    """The result of ``attempt()``, tried again after a :class:`Transient` failure while fewer than
    ``attempts`` attempts were made and less than ``deadline`` seconds have passed since the first
    began (an attempt that used the whole deadline is not repeated: the next tick is the retry).

    Each attempt bounds its own calls (a timeout per call); ``deadline`` bounds only when another
    may start. Raises :class:`Unavailable` after the last :class:`Transient`; a
    :class:`SourceError` (:class:`Permanent` included) at once, as it is.
    """
    policy = AsyncRetrying(
        stop=stop_after_attempt(attempts) | stop_after_delay(deadline),
        wait=_WAIT,
        retry=retry_if_exception_type(Transient),
        reraise=True,
    )
    try:
        async for try_ in policy:
            with try_:
                return await attempt()
    except Transient as e:
        raise Unavailable(str(e)) from None
    raise AssertionError("unreachable: tenacity either returns a result or re-raises")  # pragma: no cover
