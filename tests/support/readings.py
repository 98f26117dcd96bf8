"""What every source's tests share: the sources a test made, closed when it ends, and a reading
waited for until it settles on what the peer publishes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from docktor.tools.sdk import SourceError
from tests.support.waiting import read_until

__all__ = ["opened", "settling"]

Reading = dict[str, float]


@asynccontextmanager
async def opened(plugin: Any, *, clocked: bool = True) -> AsyncIterator[Callable[..., Any]]:
    """``make(settings[, clock])``: a ``plugin`` source on those settings (and its own monotonic
    clock, when it takes one), closed when the block ends."""
    made: list[Any] = []

    def make(settings: Any, clock: Callable[[], float] = time.monotonic) -> Any:
        source = plugin(settings, clock=clock) if clocked else plugin(settings)
        made.append(source)
        return source

    try:
        yield make
    finally:
        for source in made:
            await source.close()


def settling(within: float, every: float) -> Callable[..., Awaitable[Reading]]:
    """``read_settled(read, ok[, within])``: the reading once ``ok`` holds, for a peer whose figures
    move every ``every`` seconds (a bound for slow machines, not a timing assertion); a read that
    raises SourceError (the peer still starting) is retried."""

    async def read_settled(read: Callable[[], Awaitable[Reading]], ok: Callable[[Reading], bool], within: float = within) -> Reading:
        return await read_until(read, ok, within, every=every, tolerate=(SourceError,))

    return read_settled
