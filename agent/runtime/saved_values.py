"""What a saved number may be, and how a piece that is not one is set aside: the checks every piece
of a state file goes through (:mod:`.persist`, :mod:`.policy_memory`, :mod:`.restore`), apart so
that they read them without importing each other."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

#: how far ahead of now a saved deadline may lie (a pause's end, a back-off): a longest pause
MAX_AHEAD_S = 10 * 365 * 86400.0
#: a saved instant a little ahead of this machine's clock is one saved just before the clock stepped back
CLOCK_SLACK_S = 60.0


def instant(value: Any, wall: float, *, ahead: float = CLOCK_SLACK_S) -> float:
    """A saved wall-clock time: a finite number of seconds since the epoch, at most ``ahead``
    seconds after ``wall`` (ValueError otherwise: ``1e12`` is the year 33658, not a time)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a time")
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{value!r} is not a time")
    if x > wall + ahead:
        raise ValueError(f"{value!r} is {x - wall:.3g} s in the future")
    return x


def count(value: Any) -> int:
    """A saved count: a whole number >= 0 (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def take_apart(discarded: list[str], what: str, fn: Callable[[], None]) -> None:
    """Run ``fn``, which reads one piece of a state file: a piece that does not parse, or holds a
    number it cannot mean, adds one line to ``discarded`` saying which and why; the rest is kept."""
    try:
        fn()
    except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as e:
        discarded.append(f"{what}: unusable ({_why(e)})")


def _why(e: BaseException) -> str:
    """The first line of why a saved piece did not parse (a missing key named as such)."""
    if isinstance(e, KeyError):
        return f"{e.args[0]!r} is missing"
    text = str(e).strip().splitlines()
    return text[0][:200] if text and text[0] else type(e).__name__
