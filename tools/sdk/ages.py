"""Ages from the times a broker keeps with a message (``queue.oldest_age``): now minus then, or
missing with the reason when the time cannot be when that message was published.

A broker's time comes from another clock (the broker's host, or the producer's, for RabbitMQ's
``timestamp`` property) and sometimes from a field that is not a time at all (an unset property,
milliseconds where seconds belong, a Redis stream ID the producer chose). An age from such a time
is either absurd (56 years for a ``0``) or negative (the year 33658 for a millisecond count read
as seconds): both are :class:`Missing` with the reason, so they never drive a decision. A time a
little ahead of this clock is the usual skew between two hosts: it counts as just published.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from docktor.tools.sdk.metric_info import Missing

#: how far ahead of this machine's clock a message's time may be and still mean "just now" (the
#: broker's or the producer's clock running a little ahead of the daemon's host); beyond it the
#: time is missing, never a negative or a zero age
CLOCK_SKEW = 2.0
#: 2000-01-01T00:00:00Z: no queue holds a message from before it; such a time is an unset field
#: (0) or seconds read as milliseconds
EARLIEST = 946_684_800.0
_YEAR = 365.2425 * 86400
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)")


def age_since(published: float, now: float, what: str = "the oldest message's time") -> float:
    """Seconds from ``published`` to ``now`` (both seconds since the epoch). A time ahead of
    ``now`` by at most :data:`CLOCK_SKEW` is 0; a time further ahead, before 2000 or not a number
    is :class:`Missing`, its reason naming ``what`` and the time."""
    if not math.isfinite(published):
        return Missing(f"{what} is {published}, not a time")
    if published < EARLIEST:
        return Missing(f"{what} ({_when(published)}) is before 2000: not when a message was published (an unset timestamp?)")
    ahead = published - now
    if ahead > CLOCK_SKEW:
        hint = " (milliseconds read as seconds?)" if published > 1e11 else " (a clock set wrong, or not a publish time)"
        return Missing(f"{what} ({_when(published)}) is {_span(ahead)} ahead of this clock{hint}")
    return max(0.0, now - published)


def rfc3339_epoch(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time with any number of fractional digits (NATS gives
    nanoseconds, which :func:`datetime.fromisoformat` does not take); None when it is not one."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    zone = "+00:00" if m[3] in ("Z", "z") else m[3]
    try:
        whole = dt.datetime.fromisoformat(m[1] + zone).timestamp()
    except ValueError:
        return None
    return whole + (float(f"0.{m[2]}") if m[2] else 0.0)


def _when(at: float) -> str:
    """``2026-12-07T13:01:02Z``, or for a time no calendar shows ``the year 33658``."""
    try:
        return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"the year {int(1970 + at // _YEAR)}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 2 * _YEAR:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / _YEAR:.0f} years"
