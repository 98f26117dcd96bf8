"""``queue.oldest_age`` against the producer's own clock: when a test's producer sent a message,
and the check that a source's age agrees with it (the issue's yardstick: within 1 s)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AGREEMENT", "Published", "age_read", "sent", "sent_now"]

#: how far a source's age may be from the one the producer's publish time gives
AGREEMENT = 1.0


@dataclass(frozen=True)
class Published:
    """When the producer sent a message and when the broker acknowledged it: the time the broker
    keeps lies between (or is the producer's own, for RabbitMQ's ``timestamp``)."""

    sent: float
    acked: float


async def sent(publish: Callable[[], Awaitable[Any]]) -> Published:
    """``await publish()`` bracketed by the producer's clock."""
    before = time.time()
    await publish()
    return Published(before, time.time())


def sent_now(publish: Callable[[], Any]) -> Published:
    """``publish()`` (a synchronous client's) bracketed by the producer's clock."""
    before = time.time()
    publish()
    return Published(before, time.time())


async def age_read(read: Callable[[], Awaitable[Mapping[str, float]]], oldest: Published, metric: str = "queue.oldest_age",
                   *, resolution: float = 0.0) -> float:
    """``metric`` of one ``read()``, checked against ``oldest``'s publish time: within the bracket
    the two clocks allow (the source's clock read during the read, the message stored while it was
    published, ``resolution`` for a broker that keeps whole seconds), and within :data:`AGREEMENT`
    of the age the producer computes."""
    before = time.time()
    got = await read()
    after = time.time()
    age = got[metric]
    low, high = before - oldest.acked - resolution, after - oldest.sent + resolution
    assert low <= age <= high, f"{metric} {age:.3f} outside [{low:.3f}, {high:.3f}] from the producer's times"
    producer = (before + after) / 2 - oldest.sent
    assert abs(age - producer) <= AGREEMENT, f"{metric} {age:.3f} vs {producer:.3f} from the producer's publish time"
    return age
