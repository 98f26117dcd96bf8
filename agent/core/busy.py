"""When a lower bound on throughput may size the arrival rate too (:mod:`docktor.agent.core.sizing`).

Only where the next check comes after the wait budget: then the messages arriving until it are
late before any check sees them queued (docs/policy.md step 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from docktor.agent.core.derived import pending

#: a queue grown by more than this many standard deviations of a Poisson count of the interval's
#: arrivals is the replicas falling behind, not arrival noise (a 1-replica service at 99 % of its
#: throughput sees its queue go 10, 1, 9, ... at 30 s checks; sized on that, it flaps 1 -> 2 -> 1)
BEHIND_Z = 2.0


def busy_interval(points: Sequence[tuple[float, Mapping[str, float]]]) -> bool:
    """Whether the last interval shows the replicas busy: a queue past arrival noise grew, stood, or drained.

    With a lower bound on throughput (the best ``rate_out / running``, on intervals not surely
    busy) the policy sizes the queue alone, because a rate term would keep whatever count runs:
    replicas that keep up serve ``rate_in`` exactly, so ``rate_in / (rate_out / running)`` is the
    count running, however idle. A queue says more, once it is past ``BEHIND_Z`` standard
    deviations of a Poisson count of the interval's arrivals (less is arrival noise), and then
    the rate counts:

    - the queue grew past that: ``rate_in`` exceeded what the replicas served, so they are too
      few, and the bound, which can only read low, errs toward more replicas, never fewer;
    - a queue past that at both ends: the replicas had work throughout, so ``rate_out /
      running`` is what they do; the rate over it asks more replicas than run only if the queue
      grew, fewer if it shrank;
    - the queue drained (messages waited at the start, none at the end): the replicas served
      more than arrived, so the rate over the bound asks fewer than run, never a count kept idle
      (and not 0 while messages arrive, as the queue alone would say).
    """
    if len(points) < 2:
        return False
    (t0, prev), (t1, cur) = points[-2], points[-1]
    p0, p1 = pending(prev), pending(cur)
    if p0 is None or p1 is None:
        return False
    if p1 <= 0:
        return p0 > 0
    noise = BEHIND_Z * math.sqrt(cur.get("queue.rate_in", 0.0) * max(0.0, t1 - t0))
    return p1 - p0 > noise or min(p0, p1) > noise
