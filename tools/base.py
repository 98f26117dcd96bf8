"""The two small interfaces every plugin implements: a metric source and an executor.

Like KEDA's scalers and Nomad Autoscaler's plugins, each queue system or backend lives in one
file under ``tools/`` and exposes one class. Sources turn a queue into named metrics; executors
turn a replica count into running workers. Neither knows anything about rules or policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: Observations are plain ``metric name -> number`` maps. A metric that could not be read is
#: *absent*, never zero: missing data must never look like an idle queue.
Metrics = dict[str, float]


class SourceError(Exception):
    """A source could not produce a reading this tick (after its own retries)."""


class ExecutorError(Exception):
    """An executor could not report or change replicas (after its own retries)."""


@runtime_checkable
class MetricSource(Protocol):
    """Reads one queue's metrics. One instance per service, kept for the daemon's lifetime.

    ``read`` is called once per tick. Rates (``queue.rate_in``/``queue.rate_out``) are computed
    from the previous call's counters, so the first call may omit them. Implementations apply
    their own timeouts and retries and raise :class:`SourceError` when a reading is impossible.
    """

    async def read(self) -> Metrics: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ReplicaStatus:
    """What an executor knows about a service's replicas right now."""

    desired: int  # the count the executor was last asked for (or found configured)
    running: int  # replicas actually running (and healthy, where health is known)
    failed: int = 0  # replicas that exited, crashed or are restart-looping
    healthy: bool = True  # False when the executor itself is degraded
    detail: str = ""  # human-readable note, e.g. "replica 3 exited with code 1"
    metrics: Metrics = field(default_factory=dict)  # optional per-service metrics (cpu.*, mem.*)


@dataclass(frozen=True)
class ScaleOutcome:
    """Result of asking an executor for N replicas, after it verified the change."""

    ok: bool
    message: str
    duration_ms: float
    running: int | None = None  # replicas running once verification ended


@runtime_checkable
class Executor(Protocol):
    """Runs a service's replicas. One instance per service.

    ``scale`` must return only after verifying (or timing out verifying) that the target count is
    running; it reports failure in the outcome rather than raising, so the decision log can say
    why. ``status`` raises :class:`ExecutorError` when the backend cannot be asked at all.
    """

    async def status(self) -> ReplicaStatus: ...

    async def scale(self, replicas: int) -> ScaleOutcome: ...

    async def close(self) -> None: ...
