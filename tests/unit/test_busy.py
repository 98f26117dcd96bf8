"""A lower bound on throughput (the best ``rate_out / running``) sizes the arrival rate too only
after an interval that shows the replicas busy (agent/core/busy.py): the queue grew past arrival
noise, or it drained. Otherwise the queue alone, as before."""

from __future__ import annotations

import math

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core import sizing
from docktor.agent.core.busy import busy_interval
from docktor.agent.core.rules import evaluate
from docktor.agent.core.state import ServiceState

SVC = ServiceConfig(name="w", policy="docktor", min_replicas=1, max_replicas=50, check_interval=30, target_wait=30,
                    startup_delay=10)


def history(points: list[tuple[float, dict[str, float]]]) -> ServiceState:
    state = ServiceState()
    state.history.extend(points)
    return state


def propose(o: dict[str, float], current: int, state: ServiceState, now: float) -> sizing.Proposal:
    return sizing.docktor_policy(SVC, o, current, state, evaluate(SVC.rules, o), now)


def read(pending: float, running: int, rate_in: float | None = None, rate_out: float | None = None,
         ack: float | None = None) -> dict[str, float]:
    """A read as the NATS source gives it; the first read of a loop has no rates."""
    in_flight = float(min(running, pending) if ack is None else ack)
    o = {"queue.pending": float(pending), "queue.ack_pending": in_flight, "queue.backlog": pending + in_flight,
         "replicas.running": float(running)}
    if rate_in is not None:
        o |= {"queue.rate_in": float(rate_in), "queue.rate_out": float(rate_in if rate_out is None else rate_out)}
    return o


def test_a_lower_bound_sizes_the_rate_only_after_an_interval_that_shows_the_replicas_busy() -> None:
    def busy(p0: float, p1: float, rate_in: float) -> bool:
        return busy_interval([(0.0, read(p0, 1)), (30.0, read(p1, 1, rate_in))])

    assert busy(0, 1334, 317)  # grew: more arrived than the replicas served
    assert busy(2599, 0, 358)  # drained: the replicas served more than arrived
    assert not busy(0, 0, 20)  # kept up: rate_out / running is the load, not the capacity
    # 50/s on one replica doing ~50/s: 1,500 arrivals a check, so 8 more queued is counting noise
    assert not busy(1, 9, 50)
    assert busy(900, 800, 50)  # a queue past the noise at both ends: the replicas had work throughout
    assert not busy(9, 60, 50) and not busy(60, 9, 50)  # within the noise at one end, no growth past it
    assert not busy_interval([(30.0, read(1334, 1, 317))])


def test_the_warm_up_read_of_a_growing_queue_sizes_its_rate_with_the_lower_bound() -> None:
    """random-walk@8 at 30 s checks: 1,334 queued and 317/s arriving 5 s in, one replica serving
    50/s. The queue alone says 1 replica (it can serve 1,334 within the SLO); the rate says the
    replica falls 267/s further behind every second until the next check, 25 s away."""
    state = history([(0.0, read(0, 1))])
    o = read(1334, 1, 317, 50)
    assert sizing.estimate_mu(SVC, state.series(o, 5.0)) == (50.0, "lower_bound")
    p = propose(o, 1, state, 5.0)
    assert f"({sizing.MU_WORDS['lower_bound_busy']})" in p.reason and "317/s now" in p.reason, p.reason
    assert p.target >= math.ceil(317 / 50)


def test_with_checks_inside_the_wait_budget_the_next_check_measures_first() -> None:
    """At 5 s checks the messages arriving before the next check are still in their budget when
    it sees them queued, and by then the throughput is usually measured: the queue alone, as before."""
    config = ServiceConfig(name="w", policy="docktor", min_replicas=1, max_replicas=50, check_interval=5,
                           target_wait=30, startup_delay=10)
    state = history([(0.0, read(0, 1))])
    o = read(1334, 1, 317, 50)
    p = sizing.docktor_policy(config, o, 1, state, evaluate(config.rules, o), 5.0)
    assert "0/s now" in p.reason and "(at least: the best seen)" in p.reason, p.reason


def test_a_lower_bound_on_replicas_that_keep_up_sizes_the_queue_alone() -> None:
    """4 replicas serve all 20/s that arrive and nothing waits: 5/s each is the load, not what they
    can do. Sized on the rate, that bound keeps all 4 forever; the queue alone lets them go."""
    state = history([(0.0, read(0, 4)), (30.0, read(0, 4, 20, ack=0))])
    o = read(0, 4, 20, ack=0)
    assert sizing.estimate_mu(SVC, state.series(o, 60.0)) == (5.0, "lower_bound")
    p = propose(o, 4, state, 60.0)
    assert p.target < 4 and sizing.MU_WORDS["lower_bound_busy"] not in p.reason, p.reason


def test_a_lower_bound_from_a_busier_interval_slows_a_scale_in_with_the_rate() -> None:
    """10 replicas keep up with 123/s and nothing waits, but one replica did 48/s earlier: the
    rate over that bound asks 3, fewer than run, so it cannot keep an idle count; the queue
    alone would ask none while 123/s arrive."""
    state = history([(0.0, read(0, 1)), (30.0, read(1440, 1, 96, 48)), (60.0, read(0, 10, 100, 148, ack=3))])
    o = read(0, 10, 123, 123, ack=3)
    assert sizing.estimate_mu(SVC, state.series(o, 90.0)) == (48.0, "lower_bound")
    p = propose(o, 10, state, 90.0)
    assert math.ceil(123 / 48) <= p.target < 10 and sizing.MU_WORDS["lower_bound_busy"] in p.reason, p.reason


def test_a_queue_drained_under_a_lower_bound_keeps_replicas_for_the_rate_still_arriving() -> None:
    """on-off@8: 10 replicas drain 2,599 queued while 358/s keep arriving, throughput still a lower
    bound (51/s, one replica's best). The queue alone is empty and would ask 0; the rate over the
    bound asks some, and fewer than the 10 that served more than arrived."""
    state = history([(0.0, read(0, 1)), (5.0, read(1540, 1, 359, 51)), (30.0, read(2599, 10, 362, 320))])
    o = read(0, 10, 358, 445, ack=7)
    assert sizing.estimate_mu(SVC, state.series(o, 60.0)) == (51.0, "lower_bound")
    p = propose(o, 10, state, 60.0)
    assert 0 < p.target <= 10 and f"({sizing.MU_WORDS['lower_bound_busy']})" in p.reason, p.reason
