"""What the simulator replays: the scenario (the workers, the checks, the faults) and the workload
it draws from a trace (arrival and service time of every message, one seeded generator, so every
policy sees the same messages). :mod:`docktor.agent.sim.simulator` runs a controller against it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from docktor.agent.config.headroom_setting import NO_HEADROOM, Headroom
from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.trace_file import Trace


@dataclass(frozen=True)
class Scenario:
    service_s: float = 0.020
    cv: float = 0.5
    startup_s: float = 10.0
    slo_s: float = 30.0
    interval_s: float = 5.0
    min_replicas: int = 1
    max_replicas: int = 50
    seed: int = 1
    #: the HPA's sync period and KEDA's polling interval; None: their defaults (15 s, 30 s)
    peer_period_s: float | None = None
    #: seconds a replica being stopped still costs (a worker that outlives SIGTERM until the
    #: executor's grace period ends: ``bench --from-log`` measures it from the log's outcomes)
    stop_s: float = 0.0
    #: ``headroom`` of the docktor and target policies' service (``--headroom``): none by default
    headroom: Headroom = NO_HEADROOM
    #: service times of the messages arriving from the trace's midpoint on, times this (``--drift``)
    drift: float = 1.0
    #: messages per second all replicas together can complete, whatever their count (``--cap-rate``)
    cap_rate: float | None = None

    def check(self) -> None:
        problems = []
        if not self.service_s > 0:
            problems.append(Problem("--service-ms", "must be > 0"))
        if self.cv < 0:
            problems.append(Problem("--cv", "must be >= 0"))
        if self.startup_s < 0:
            problems.append(Problem("--startup-s", "must be >= 0"))
        if not self.slo_s > 0:
            problems.append(Problem("--slo-s", "must be > 0"))
        if not self.interval_s > 0:
            problems.append(Problem("--interval-s", "must be > 0"))
        if not self.drift > 0:
            problems.append(Problem("--drift", "must be > 0"))
        if self.cap_rate is not None and not self.cap_rate > 0:
            problems.append(Problem("--cap-rate", "must be > 0"))
        if self.stop_s < 0:
            problems.append(Problem("stop_s", "must be >= 0"))
        if self.peer_period_s is not None and not self.peer_period_s > 0:
            problems.append(Problem("--peer-period-s", "must be > 0"))
        if self.min_replicas < 0:
            problems.append(Problem("--min", "must be >= 0"))
        if self.max_replicas < max(1, self.min_replicas):
            problems.append(Problem("--max", f"must be >= 1 and >= --min ({self.min_replicas})"))
        if problems:
            raise UsageError(problems)


@dataclass(frozen=True)
class Workload:
    arrivals: np.ndarray  # sorted arrival times, seconds
    service: np.ndarray  # service time of message i (FIFO order)

    # The simulation loop indexes Python lists (much faster per element than numpy arrays);
    # converted once per workload, since a bench or a tuning sweep replays it many times.
    @functools.cached_property
    def arrival_list(self) -> list[float]:
        return list(self.arrivals.tolist())

    @functools.cached_property
    def service_list(self) -> list[float]:
        return list(self.service.tolist())


def workload(trace: Trace, scenario: Scenario) -> Workload:
    rng = np.random.default_rng(scenario.seed)
    counts = trace.rates
    n = int(counts.sum())
    seconds = np.repeat(np.arange(len(counts), dtype=float), counts)
    arrivals = np.sort(seconds + rng.random(n))
    if scenario.cv == 0:
        service = np.full(n, scenario.service_s)
    else:
        shape = 1.0 / scenario.cv**2
        service = rng.gamma(shape, scenario.service_s / shape, n)
    if scenario.drift != 1.0:
        # drawn first, then scaled: the messages before the midpoint are the same as without drift
        service = np.where(arrivals >= trace.duration / 2, service * scenario.drift, service)
    return Workload(arrivals, service)
