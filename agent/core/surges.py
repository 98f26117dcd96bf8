"""Which past surge the ``docktor`` policy insures against (docs/policy.md step 5).

The surge margin holds the replicas that absorb one check interval's volume at once. Which
volume: the largest of the last few minutes (the span over which scale-in counts a replica as
"needed again soon"), or, over the policy's whole surge memory, the largest that *came back*:
two reads at least ``apart`` seconds from each other with the load fallen, between them, below
``DIP`` of the smaller. One surge seen once (a flash crowd, one spike) is insured while it is
recent, not for the whole memory: at 30 s checks an interval's volume at once is about twice
the peak's own count, and holding it for 30 min after a crowd that came once cost 3.4-4.0x
docktor's replica-seconds at 5 s checks (docs/benchmarks.md, "Checks every 30 s"). A surge that
recurs (bursts, spikes) stays insured, at the smaller of the two: the level seen twice.
The caller (:mod:`docktor.agent.core.sizing`) gives the whole memory as the recent span where a
start-up outlasts the wait budget: there no check reacts to any surge in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: between two surges the load fell below this fraction of the smaller: two surges, not one going on
DIP = 0.5


@dataclass(frozen=True)
class Insured:
    """The surge to absorb: ``burst`` messages at once, then ``peak`` per second."""

    burst: float
    peak: float
    #: whether it is a surge that came back (else the largest of the recent span)
    again: bool


def came_back(times: np.ndarray, volumes: np.ndarray, rates: np.ndarray, above: float, apart: float) -> tuple[float, float]:
    """The largest volume (and rate) seen twice, ``apart`` seconds or more, with a dip between.

    For two reads i < j the level seen twice is ``min(volumes[i], volumes[j])``; they are two
    surges if some read strictly between them brought less than ``DIP`` of that. Only reads
    above ``above`` (what the recent span already insures) can raise the answer, so only they
    are paired. Returns (volume, rate), zeros if no surge came back.
    """
    best_v = best_r = 0.0
    candidates = np.flatnonzero(volumes > above)
    for i in candidates:
        later = candidates[candidates > i + 1]  # a read must lie between them
        if later.size == 0:
            continue
        between = np.minimum.accumulate(volumes[i + 1 :])[later - i - 2]  # min of volumes[i+1 .. j-1]
        level = np.minimum(volumes[i], volumes[later])
        ok = (between < DIP * level) & (times[later] - times[i] >= apart)
        if ok.any():
            best_v = max(best_v, float(level[ok].max()))
            best_r = max(best_r, float(np.minimum(rates[i], rates[later[ok]]).max()))
    return best_v, best_r


def insured(
    times: np.ndarray, volumes: np.ndarray, rates: np.ndarray, now: float, recent: float, apart: float
) -> Insured:
    """The largest volume and peak rate of the last ``recent`` seconds, or larger ones that came back.

    ``times``, ``volumes`` and ``rates`` are the reads of the surge memory, oldest first (the
    newest, today's, always within ``recent``).
    """
    fresh = times > now - recent
    if not fresh.any():
        fresh = times >= times.max()
    burst, peak = float(volumes[fresh].max()), float(rates[fresh].max())
    again_v, again_r = came_back(times, volumes, rates, burst, apart)
    if again_v > burst:
        return Insured(again_v, max(peak, again_r), True)
    return Insured(burst, peak, False)
