"""An in-memory source: :class:`FakeQueue` is the peer a test scripts, :class:`FakeSource` the plugin.

:class:`FakeSource` is a real implementation of the SDK's :class:`~docktor.tools.sdk.Source`
(``kind: fake``), with the behaviour every source owes the daemon: it raises
:class:`~docktor.tools.sdk.SourceError` when its peer refuses, answers garbage or stays silent
past the source's ``timeout``; it computes ``queue.rate_in``/``queue.rate_out`` from the peer's
cumulative counters between two reads (none on the first read, none across a reset) and keeps
that baseline across a restart with :meth:`~FakeSource.snapshot`/:meth:`~FakeSource.restore`.

The peer is a :class:`FakeQueue`, found by name: the settings' ``script`` (default: the service's
name) names the queue the test created, so a config file written by the test reaches the very
object the test steers::

    queue = FakeQueue("orders", {"queue.backlog": 120})   # every read until told otherwise
    queue.set([{"queue.backlog": 10}, {"queue.backlog": 900}])  # one per read; the last one stays
    queue.set(lambda n: {"queue.backlog": 10.0 * n})        # by read number, from 1
    queue.count(arrived=100, completed=80)                  # counters: rates between reads
    queue.fail("connection refused")                        # the next read raises SourceError
    queue.stall(times=None)                                 # silent until queue.clear()
    queue.sources                                           # the FakeSource instances reading it

Values pass through as scripted, so a test can hand the daemon what a broken plugin would (a
negative depth, NaN); :func:`~docktor.tools.sdk.admit` is the daemon's business.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from docktor.tools.sdk import STANDARD_METRICS, Context, EnvName, MetricInfo, PluginSettings, PositiveSeconds, Source, SourceError
from docktor.tools.testing.faults import Fault, Scripted

#: one reading: metric name -> value, returned as is
Reading = Mapping[str, float]
#: what a queue answers: the same reading every time, one per read (the last one stays), or a
#: function of the read's number (1 for the first answered read)
Script = Reading | Sequence[Reading] | Callable[[int], Reading]

#: the metrics a fake source declares unless its settings say otherwise
DEFAULT_METRICS = ("queue.backlog", "queue.pending", "queue.rate_in", "queue.rate_out")


_QUEUES: dict[str, FakeQueue] = {}
_SOURCES: weakref.WeakSet[FakeSource] = weakref.WeakSet()
_serial = itertools.count(1)


class FakeQueue(Scripted):
    """The peer of :class:`FakeSource`: scripted readings, counters and faults, registered by name.

    Creating one registers it under ``name`` (replacing an earlier queue of that name); sources
    look it up at every read, so a queue created after the daemon opened is found at its next tick.
    """

    what = "fake queue"

    def __init__(
        self, name: str, values: Script | None = None, *, token: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(name)
        #: when set, a source must present it (``token_env``) or be refused
        self.token = token
        #: the clock rates are measured on (share the test's fake clock for exact rates)
        self.clock = clock
        self._script: Script = {} if values is None else values
        self.arrived: float | None = None
        self.completed: float | None = None
        #: reads that reached the queue (faults included) and reads it answered with a reading
        self.reads = 0
        self.answered = 0
        _QUEUES[name] = self

    # ------------------------------------------------------------------ scripting

    def set(self, values: Script) -> FakeQueue:
        """What the next reads answer (see :data:`Script`); the read count restarts at 1."""
        self._script, self.answered = values, 0
        return self

    def count(self, *, arrived: float, completed: float) -> FakeQueue:
        """Set the cumulative counters: a source computes rates from their change between reads."""
        self.arrived, self.completed = float(arrived), float(completed)
        return self

    def arrive(self, n: float) -> None:
        """``n`` more messages arrived (starts the counters at 0 when they were never set)."""
        self.arrived = (self.arrived or 0.0) + n
        self.completed = self.completed or 0.0

    def complete(self, n: float) -> None:
        """``n`` more messages were completed."""
        self.completed = (self.completed or 0.0) + n
        self.arrived = self.arrived or 0.0

    def fail(self, message: str = "connection refused", *, times: int | None = 1) -> FakeQueue:
        """The peer refuses: reads raise :class:`SourceError` saying ``message``."""
        return self.script(Fault("fail", times, message=message))

    def garble(self, *, times: int | None = 1) -> FakeQueue:
        """The peer answers garbage: reads raise :class:`SourceError`, as a careful plugin's do."""
        return self.script(Fault("garble", times))

    def stall(self, *, times: int | None = 1) -> FakeQueue:
        """The peer never answers: reads wait the source's ``timeout``, then raise :class:`SourceError`."""
        return self.script(Fault("stall", times))

    def forget(self) -> None:
        """Unregister: sources naming this queue now find nothing (as if its server were gone)."""
        if _QUEUES.get(self.name) is self:
            del _QUEUES[self.name]

    @property
    def sources(self) -> list[FakeSource]:
        """Every live :class:`FakeSource` whose settings name this queue, oldest first (closed ones too)."""
        return sorted((s for s in _SOURCES if s.script == self.name), key=lambda s: s.serial)

    # ------------------------------------------------------------------ answering

    def next_reading(self) -> dict[str, float]:
        self.answered += 1
        script = self._script
        if callable(script):
            reading = script(self.answered)
        elif isinstance(script, Mapping):
            reading = script
        else:
            if not script:
                return {}
            reading = script[min(self.answered, len(script)) - 1]
        return dict(reading)


class FakeSourceSettings(PluginSettings):
    """``kind: fake``: read the :class:`FakeQueue` named ``script``."""

    kind: Literal["fake"]
    #: the FakeQueue to read (default: the Docktor service's name)
    script: str | None = None
    #: how long a read waits for a silent peer
    timeout: PositiveSeconds = 2.0
    #: the metrics it declares (``metrics_for``)
    metrics: tuple[str, ...] = Field(default=DEFAULT_METRICS, min_length=1)
    #: names the variable holding the token a queue created with ``token=`` requires
    token_env: EnvName | None = None


class FakeSource(Source[FakeSourceSettings]):
    """Reads a :class:`FakeQueue`, like a real source reads its server."""

    Settings = FakeSourceSettings

    def __init__(self, settings: FakeSourceSettings, context: Context) -> None:
        super().__init__(settings, context)
        #: the queue this source reads
        self.script = settings.script or context.service
        self.serial = next(_serial)
        self.closed = False
        self._prev: tuple[float, float] | None = None
        self._prev_at = 0.0
        #: the queue's clock when it was last known (a snapshot needs a clock without a read)
        self._clock: Callable[[], float] = time.monotonic
        _SOURCES.add(self)

    @classmethod
    def metrics_for(cls, settings: FakeSourceSettings) -> Mapping[str, MetricInfo]:
        return {name: STANDARD_METRICS.get(name) or MetricInfo("", "scripted by the test") for name in settings.metrics}

    @classmethod
    def describe(cls, settings: FakeSourceSettings) -> str:
        return f"fake queue {settings.script}" if settings.script else "fake queue"

    async def read(self) -> dict[str, float]:
        if self.closed:
            # the daemon must never read a source it closed: loud, so a test sees it
            raise RuntimeError(f"fake source for {self.script!r} read after close()")
        queue = _QUEUES.get(self.script)
        if queue is None:
            raise SourceError(f"cannot reach fake queue {self.script!r}: no FakeQueue of that name")
        self._clock = queue.clock
        queue.reads += 1
        self._present_token(queue)
        fault = queue.faults.take()
        if fault is not None:
            await self._misbehave(queue, fault)
        out = queue.next_reading()
        for name, rate in self._rates(queue).items():
            out.setdefault(name, rate)  # a scripted value wins over a computed one
        return out

    def snapshot(self) -> dict[str, Any] | None:
        if self._prev is None:
            return None
        arrived, completed = self._prev
        return {"v": 1, "age_s": self._clock() - self._prev_at, "arrived": arrived, "completed": completed}

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        if data.get("v") != 1:
            return False
        age = float(data["age_s"]) + elapsed
        counters = (float(data["arrived"]), float(data["completed"]))
        if not (math.isfinite(age) and age >= 0 and all(math.isfinite(c) and c >= 0 for c in counters)):
            return False
        queue = _QUEUES.get(self.script)
        self._clock = queue.clock if queue is not None else self._clock
        self._prev, self._prev_at = counters, self._clock() - age
        return True

    async def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ inside

    def _present_token(self, queue: FakeQueue) -> None:
        if queue.token is None:
            return
        name = self.settings.token_env
        given = os.environ.get(name) if name else None
        if given != queue.token:
            # like a server's 401: names the setting, never the value given
            who = f"the token in {name}" if name else "a read without a token (set token_env)"
            raise SourceError(f"fake queue {self.script!r} refused {who}")

    async def _misbehave(self, queue: FakeQueue, fault: Fault) -> None:
        if fault.kind == "fail":
            raise SourceError(f"fake queue {self.script!r}: {fault.message}")
        if fault.kind == "garble":
            raise SourceError(f"fake queue {self.script!r} answered garbage: not a reading")
        if fault.kind == "stall":
            await asyncio.sleep(self.settings.timeout)
            raise SourceError(f"fake queue {self.script!r} timed out after {self.settings.timeout:g}s")
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            return
        assert fault.error is not None
        raise fault.error

    def _rates(self, queue: FakeQueue) -> dict[str, float]:
        """Rates over the time since the previous read's counters; none without a baseline or across a reset."""
        if queue.arrived is None or queue.completed is None:
            self._prev = None
            return {}
        now, cur, prev = queue.clock(), (queue.arrived, queue.completed), self._prev
        elapsed = now - self._prev_at
        if prev is not None and elapsed <= 0:
            return {}  # keep the older baseline: the next rate spans a real interval
        self._prev, self._prev_at = cur, now
        if prev is None or cur[0] < prev[0] or cur[1] < prev[1]:
            return {}  # the first reading, or counters that went backwards (a re-created queue)
        return {"queue.rate_in": (cur[0] - prev[0]) / elapsed, "queue.rate_out": (cur[1] - prev[1]) / elapsed}
