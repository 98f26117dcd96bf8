"""When a service's checks run: the daemon's loop and the simulator both take their times from here.

Tick 0 runs when the loop starts; then, drift-free, on the grid ``start + k*interval``. A source
reporting rates (``queue.rate_in`` and ``rate_out``: deltas between two reads) has none on the
first read, so with a long ``check_interval`` the first decision that sees a rate would come a
whole interval after the start, while a backlog that was already growing waits: at 30 s checks
the HPA (15 s sync) saw it first. The **warm-up read** moves the second tick to
``start + min(check_interval, WARM_UP_S)``; the grid goes on from ``start + interval`` (k >= 1).
At ``check_interval <= WARM_UP_S`` (the simulator's default scenario checks every 5 s) nothing
changes; the config's default ``check_interval`` (10 s) reads at 0, 5, 10, 20, ...

Tick indices count every tick run, the warm-up included: with the warm-up, tick 1 is due at
``start + WARM_UP_S`` and tick k >= 2 at ``start + (k-1)*interval``.
"""

from __future__ import annotations

import math

#: the second read's delay after the first, when the check interval is longer
WARM_UP_S = 5.0


def warms_up(interval: float, warm_up: bool) -> bool:
    """Whether a schedule has the extra warm-up tick (only an interval longer than WARM_UP_S does)."""
    return warm_up and interval > WARM_UP_S


def due(start: float, interval: float, k: int, *, warm_up: bool = False) -> float:
    """When tick ``k`` is due (``warm_up``: the service's reads give rates, see the module doc)."""
    if not warms_up(interval, warm_up):
        return start + k * interval
    if k <= 1:
        return start + k * WARM_UP_S
    return start + (k - 1) * interval


def next_tick(start: float, interval: float, k: int, now: float, *, warm_up: bool = False) -> tuple[int, float]:
    """After tick ``k`` (due at :func:`due`) ended at ``now``: the next tick's index and how long
    to wait for it.

    Drift-free: tick ``k`` is due at a fixed time, so a slow tick never shifts the later ones. A
    tick that overran its successor's slot (a slow scale command) is followed at once by one more,
    as Go's ``time.Ticker`` delivers the one tick it kept: what changed while the tick was busy is
    seen now, not up to an interval later. The other missed slots are dropped, never run back to
    back to catch up (a first tick that outlasted the warm-up and the first grid slot runs the
    grid's slot, not the warm-up's).
    """
    nxt = due(start, interval, k + 1, warm_up=warm_up)
    if now < nxt:
        return k + 1, nxt - now
    # The slot that just passed is run now; the next one after it stays on the grid. Before the
    # first grid slot that can only be the warm-up (index 1), which the offset gives too.
    offset = 1 if warms_up(interval, warm_up) else 0
    return math.floor((now - start) / interval) + offset, 0.0
