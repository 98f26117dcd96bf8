"""An in-memory executor: :class:`FakeFleet` is the backend a test scripts, :class:`FakeExecutor` the plugin.

:class:`FakeExecutor` is a real implementation of the SDK's :class:`~docktor.tools.sdk.Executor`
(``executor: fake``): ``scale(n)`` changes the fleet, then verifies like a real executor (the
outcome is ok only when ``n`` replicas run; a refusal, replicas that fail to start or a
verification that outlasts ``scale_timeout`` are failed outcomes, never raises), scale-in names
the replicas it removed (not running first, then the highest numbers), and ``status()`` raises
:class:`~docktor.tools.sdk.ExecutorError` while the backend is down.

The backend is a :class:`FakeFleet`, found by name: the settings' ``script`` (default: the
service's name) names the fleet the test created. It outlives executors, as a Compose project
outlives the daemon::

    fleet = FakeFleet("orders", replicas=2, metrics={"cpu.avg": 35.0})
    fleet.refuse("no such image")          # the next scale is a failed outcome
    fleet.delay(3.0)                       # the next scale takes 3 s (fails past scale_timeout)
    fleet.fail_to_start(1)                 # one replica of the next scale-up never runs
    fleet.down()                           # status() raises ExecutorError until fleet.up()
    fleet.crash_replica()                  # a running replica crashes (failed, not running)
    fleet.scales                           # every count asked for, in order
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Literal

from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    LastScale,
    Metrics,
    PluginSettings,
    PositiveSeconds,
    RemovedReplica,
    ReplicaStatus,
    ScaleOutcome,
    standard,
)
from docktor.tools.testing.faults import Fault, Scripted

_FLEETS: dict[str, FakeFleet] = {}
_EXECUTORS: weakref.WeakSet[FakeExecutor] = weakref.WeakSet()
_serial = itertools.count(1)

Health = Literal["running", "failed"]


class FakeFleet(Scripted):
    """The backend of :class:`FakeExecutor`: numbered replicas, scripted faults, registered by name."""

    what = "fake fleet"

    def __init__(
        self,
        name: str,
        replicas: int = 0,
        *,
        metrics: Mapping[str, float] | Callable[[int], Mapping[str, float]] | None = None,
        target: str | None = None,
        last_scaled: LastScale | None = None,
    ) -> None:
        super().__init__(name)
        #: replica number -> running or failed
        self.replicas: dict[int, Health] = dict.fromkeys(range(1, replicas + 1), "running")
        self.desired = replicas
        #: what status() adds as ReplicaStatus.metrics: a mapping, or a function of the running count
        self.metrics = metrics
        #: what FakeExecutor.target() and last_scaled() return
        self.target = target
        self.last_scaled = last_scaled
        #: every count a scale asked for, in order
        self.scales: list[int] = []
        #: why the backend cannot be asked (:meth:`down`), None while it can
        self.down_reason: str | None = None
        _FLEETS[name] = self

    # ------------------------------------------------------------------ scripting

    def refuse(self, message: str = "the backend refused the change", *, times: int | None = 1) -> FakeFleet:
        """The next scale changes nothing and fails with ``message``."""
        return self.script(Fault("refuse", times, message=message))

    def delay(self, seconds: float, *, times: int | None = 1) -> FakeFleet:
        """The next scale takes ``seconds``; past the executor's ``scale_timeout`` its outcome is a
        failure and the change lands when the delay ends, as a slow backend's would."""
        return self.script(Fault("delay", times, seconds=seconds))

    def fail_to_start(self, count: int = 1, *, times: int | None = 1) -> FakeFleet:
        """``count`` replicas of the next scale-up fail to start (they count as failed)."""
        return self.script(Fault("start", times, count=count))

    def down(self, message: str = "backend unreachable") -> FakeFleet:
        """The backend cannot be asked: status() raises ExecutorError, scale() fails, until :meth:`up`."""
        self.down_reason = message
        return self

    def up(self) -> FakeFleet:
        self.down_reason = None
        return self

    def crash_replica(self, number: int | None = None) -> int:
        """Replica ``number`` (default: the highest running one) crashes; returns its number."""
        running = [n for n, health in self.replicas.items() if health == "running"]
        if not running:
            raise ValueError(f"fake fleet {self.name!r} has no running replica to crash")
        number = max(running) if number is None else number
        self.replicas[number] = "failed"
        return number

    @property
    def running(self) -> int:
        return sum(1 for health in self.replicas.values() if health == "running")

    @property
    def failed(self) -> int:
        return sum(1 for health in self.replicas.values() if health == "failed")

    @property
    def executors(self) -> list[FakeExecutor]:
        """Every live :class:`FakeExecutor` whose settings name this fleet, oldest first (closed ones too)."""
        return sorted((e for e in _EXECUTORS if e.script == self.name), key=lambda e: e.serial)

    # ------------------------------------------------------------------ changing

    def apply(self, n: int, failing: int = 0) -> list[RemovedReplica]:
        """Make it ``n`` replicas; ``failing`` of the new ones fail to start. Returns those removed."""
        removed: list[RemovedReplica] = []
        # not running first, then the highest numbers (Compose's and the local executor's order)
        for number in sorted(self.replicas, key=lambda k: (self.replicas[k] == "running", -k))[: max(0, len(self.replicas) - n)]:
            was = self.replicas.pop(number)
            if was == "running":
                removed.append(RemovedReplica(str(number), "highest number", "exited with code 0 after SIGTERM"))
            else:
                removed.append(RemovedReplica(str(number), "not running (failed)", "was not running"))
        free = (k for k in itertools.count(1) if k not in self.replicas)
        new = [next(free) for _ in range(n - len(self.replicas))]
        for i, number in enumerate(new):
            self.replicas[number] = "failed" if i >= len(new) - failing else "running"
        self.desired = n
        return removed

    def problem(self) -> str | None:
        failed = sorted(n for n, health in self.replicas.items() if health == "failed")
        if not failed:
            return None
        return f"replica{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} failed to start or crashed"


class FakeExecutorSettings(PluginSettings):
    """``executor: fake``: scale the :class:`FakeFleet` named ``script``."""

    kind: Literal["fake"]
    #: the FakeFleet to scale (default: the Docktor service's name)
    script: str | None = None
    #: how long a scale waits for the fleet before calling it a failure
    scale_timeout: PositiveSeconds = 10.0


class FakeExecutor(Executor[FakeExecutorSettings]):
    """Scales a :class:`FakeFleet`, like a real executor scales its backend."""

    Settings = FakeExecutorSettings
    provides = standard("cpu.avg", "cpu.max")

    def __init__(self, settings: FakeExecutorSettings, context: Context) -> None:
        super().__init__(settings, context)
        #: the fleet this executor scales
        self.script = settings.script or context.service
        self.serial = next(_serial)
        self.closed = False
        self._lock = asyncio.Lock()
        _EXECUTORS.add(self)

    @classmethod
    def describe(cls, settings: FakeExecutorSettings) -> str:
        return f"fake fleet {settings.script}" if settings.script else "fake fleet"

    def target(self) -> str | None:
        fleet = _FLEETS.get(self.script)
        return None if fleet is None else fleet.target

    async def last_scaled(self) -> LastScale | None:
        fleet = _FLEETS.get(self.script)
        return None if fleet is None else fleet.last_scaled

    async def status(self) -> ReplicaStatus:
        fleet = self._fleet()
        fault = fleet.faults.take("hang", "crash")
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        elif fault is not None:
            assert fault.error is not None
            raise fault.error
        if fleet.down_reason is not None:
            raise ExecutorError(f"fake fleet {self.script!r}: {fleet.down_reason}")
        return ReplicaStatus(
            desired=fleet.desired, running=fleet.running, failed=fleet.failed, detail=fleet.problem() or "", metrics=self._metrics(fleet)
        )

    async def scale(self, replicas: int) -> ScaleOutcome:
        began = time.monotonic()
        if replicas < 0:
            return ScaleOutcome(False, f"cannot scale to {replicas} replicas", 0.0)
        async with self._lock:
            try:
                fleet = self._fleet()
            except ExecutorError as e:
                return ScaleOutcome(False, str(e), _ms(began))
            fleet.scales.append(replicas)
            crash = fleet.faults.take("crash")
            if crash is not None:
                assert crash.error is not None
                raise crash.error
            if fleet.down_reason is not None:
                return ScaleOutcome(False, f"fake fleet {self.script!r}: {fleet.down_reason}", _ms(began))
            refused = fleet.faults.take("refuse")
            if refused is not None:
                return ScaleOutcome(False, refused.message, _ms(began), fleet.running)
            failing = fleet.faults.take("start")
            late = await self._wait(fleet, replicas, fleet.faults.take("delay"))
            if late is not None:
                return ScaleOutcome(False, late, _ms(began), fleet.running)
            before = fleet.running
            removed = tuple(fleet.apply(replicas, failing.count if failing is not None else 0))
            if fleet.running != replicas:
                why = fleet.problem() or f"{fleet.running}/{replicas} running"
                return ScaleOutcome(False, f"scaling to {replicas} failed: {why}", _ms(began), fleet.running, removed)
            return ScaleOutcome(True, f"{before} -> {replicas} replicas running", _ms(began), fleet.running, removed)

    async def close(self) -> None:
        fleet = _FLEETS.get(self.script)
        if self.in_process and fleet is not None and not self.closed:
            fleet.apply(0)  # a subclass whose replicas live in the daemon: they stop with it
        self.closed = True

    # ------------------------------------------------------------------ inside

    def _fleet(self) -> FakeFleet:
        if self.closed:
            raise RuntimeError(f"fake executor for {self.script!r} used after close()")
        fleet = _FLEETS.get(self.script)
        if fleet is None:
            raise ExecutorError(f"cannot reach fake fleet {self.script!r}: no FakeFleet of that name")
        return fleet

    async def _wait(self, fleet: FakeFleet, replicas: int, delay: Fault | None) -> str | None:
        """Wait out a scripted delay; past scale_timeout, say so and let the change land later."""
        if delay is None:
            return None
        timeout = self.settings.scale_timeout
        if delay.seconds <= timeout:
            await asyncio.sleep(delay.seconds)
            return None
        await asyncio.sleep(timeout)
        asyncio.get_running_loop().call_later(delay.seconds - timeout, fleet.apply, replicas)
        return f"scaling to {replicas} not done after {timeout:g}s: {fleet.running}/{replicas} running"

    @staticmethod
    def _metrics(fleet: FakeFleet) -> Metrics:
        if fleet.metrics is None or fleet.running == 0:
            return {}  # nothing runs: there is no CPU figure, not a figure of 0
        figures = fleet.metrics(fleet.running) if callable(fleet.metrics) else fleet.metrics
        return dict(figures)


def _ms(began: float) -> float:
    return (time.monotonic() - began) * 1000
