"""Waiting on a condition, never on a fixed sleep: one synchronous and one asynchronous waiter for
every test, both ``(what, condition, timeout)``.

``condition`` returns something truthy when it holds; that value is returned. A timeout is a
bound for a slow, shared machine, not a timing assertion: it fails the test naming ``what`` (and
the last value seen, which often says why).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["eventually", "read_until", "wait_until"]

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what} (last seen: {last!r})")


def wait_until(what: str, condition: Callable[[], T], timeout: float = 60.0, every: float = 0.05) -> T:
    """Poll ``condition`` every ``every`` seconds until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, got)
        time.sleep(every)


async def eventually(what: str, condition: Callable[[], T | Awaitable[T]], timeout: float = 60.0, every: float = 0.05) -> T:
    """:func:`wait_until` inside an event loop: the loop keeps running between polls, and
    ``condition`` may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = condition()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got  # type: ignore[return-value]
        if loop.time() > deadline:
            raise _timed_out(what, timeout, got)
        await asyncio.sleep(every)


async def read_until(
    read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float, every: float = 0.1,
    tolerate: tuple[type[BaseException], ...] = (),
) -> T:
    """Read until ``ok(reading)`` holds and return that reading: a source's figures settling on
    what its peer publishes (statistics every second, a scrape interval). A reading that raises
    one of ``tolerate`` (a peer still starting) is retried, and shown if it was the last."""
    last: Any = None

    async def settled() -> tuple[T] | None:  # a tuple: an empty reading may be the one awaited
        nonlocal last
        try:
            last = await read()
        except tolerate as e:
            last = e
            return None
        return (last,) if ok(last) else None

    try:
        (reading,) = await eventually("the reading to settle", settled, timeout, every)
        return reading
    except AssertionError:
        raise AssertionError(f"condition not met within {timeout:g} s; last reading: {last!r}") from None
