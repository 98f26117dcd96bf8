"""The CPU each local replica uses, which decides which ones a scale-in removes first: the CPU time
of its whole session (everything it started) over the last check interval.

Each ``status()`` (each tick) is a measurement; a figure covers at least :data:`CPU_WINDOW_S`, so
two ticks closer than that repeat the previous figure rather than divide a few clock ticks by a
few milliseconds.
"""

from __future__ import annotations

import docktor.tools.executors.procfs as procfs
from docktor.tools.executors.local_replicas import Replica, Slot
from docktor.tools.executors.scale_in import idlest_first

#: shortest interval a CPU figure is measured over (the daemon's ticks are at least this far apart)
CPU_WINDOW_S = 1.0
#: a scan of /proc this recent serves every service's measurement (they tick at the same instants)
SCAN_REUSE_S = 0.25


class CpuMeter:
    """CPU percent of each replica's session between two measurements."""

    def __init__(self) -> None:
        #: per pid: (monotonic time, CPU ticks of its session) at the last measurement, and the
        #: last figure (CPU percent, over how many seconds)
        self._seen: dict[int, tuple[float, int]] = {}
        self._last: dict[int, tuple[float, float]] = {}

    def measure(self, live: dict[int, Replica]) -> tuple[dict[int, float], float | None]:
        """Per slot of ``live`` (running replicas by slot): CPU percent of its session since the
        last measurement, and the longest interval measured over (None when nothing was measured yet)."""
        # a scan of /proc another service's executor made a moment ago is as good as a fresh one,
        # timed by when it was made
        now, scan = procfs.recent_scan(SCAN_REUSE_S)
        sessions = procfs.by_session({p.pid for p in live.values()}, scan)
        cpu: dict[int, float] = {}
        interval: float | None = None
        for index, p in live.items():
            members = sessions.get(p.pid) or []
            if not members:
                continue
            ticks = sum(m.cpu_ticks for m in members)
            previous = self._seen.get(p.pid)
            if previous is None:
                self._seen[p.pid] = (now, ticks)
            elif now - previous[0] >= CPU_WINDOW_S:
                elapsed = now - previous[0]
                self._seen[p.pid] = (now, ticks)
                self._last[p.pid] = (max(0.0, (ticks - previous[1]) / procfs.CLOCK_TICKS / elapsed * 100.0), elapsed)
            # a measurement sooner than CPU_WINDOW_S after the last repeats its figure: too short to mean much
            if p.pid in self._last:
                cpu[index], elapsed = self._last[p.pid]
                interval = max(interval or 0.0, elapsed)
        for gone in set(self._seen) - {p.pid for p in live.values()}:
            self._seen.pop(gone, None)
            self._last.pop(gone, None)
        return cpu, interval


def choose_victims(slots: list[Slot], count: int, meter: CpuMeter) -> list[tuple[Slot, str]]:
    """The ``count`` slots to remove, each with the reason it was chosen (:func:`.scale_in.idlest_first`)."""
    cpu, interval = meter.measure({s.index: s.process for s in slots if s.process is not None and s.process.alive})
    return idlest_first(
        slots,
        count,
        number=lambda s: s.index,
        running=lambda s: s.process is not None and s.process.alive,
        cpu=lambda s: cpu.get(s.index),
        not_running=lambda _: "not running",
        measured_over=f" over the last {interval or 0:.1f} s",
    )
