"""A clock the test moves by hand: what a plugin or the daemon reads as ``time.monotonic()`` (or
``time.time()``), so a rate's interval, a cooldown or a back-off is exact and never waited for."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Reads ``now`` (1000.0 unless told); the test moves it with :meth:`advance` (or sets ``now``).

    Called, it is a monotonic clock; :meth:`wall` is the matching wall clock, ``wall_offset``
    ahead, for code that takes both (the daemon's ``wall=``/``mono=``).
    """

    def __init__(self, now: float = 1000.0, wall_offset: float = 1_900_000_000.0) -> None:
        self.now = now
        self.wall_offset = wall_offset

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_offset + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
