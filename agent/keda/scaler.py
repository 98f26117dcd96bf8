"""KEDA's questions, answered from Docktor's decisions (``externalscaler.ExternalScaler``).

A ScaledObject's ``external`` trigger names a Docktor service in its metadata (``service:
worker``). For that service:

* ``GetMetricSpec``: one metric, ``docktor-<service>``, with a target of 1 per replica;
* ``GetMetrics``: the count in force after the service's current decision (every guardrail
  applied), so the HPA's AverageValue arithmetic, ``ceil(value / 1)``, lands on Docktor's count;
* ``IsActive`` / ``StreamIsActive``: whether the workload should run at all (KEDA's 0 <-> 1):
  work waiting or in flight, or a count above 0. The stream answers at once, then on each change.

The decision is the service loop's own, through :class:`~docktor.agent.runtime.on_demand.OnDemand`
(its last, or one made now), so every answer is a decision in the log like any other: ``explain``
and ``/metrics`` show it. Each call is bounded: a slow source never holds KEDA past
:attr:`DocktorScaler.bound` (nor past the call's own deadline); the last decision answers, and
the daemon's log says so. Bad questions get gRPC's own codes with one line: no ``service`` in the
metadata, INVALID_ARGUMENT; a service the config does not have, NOT_FOUND; one that is not
``executor: keda``, FAILED_PRECONDITION; no decision yet, UNAVAILABLE (KEDA's fallback applies).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from docktor.agent.keda import externalscaler_pb2 as pb
from docktor.agent.keda import externalscaler_pb2_grpc as pb_grpc
from docktor.agent.redact import redact
from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.on_demand import Answer, OnDemand
from docktor.tools.sdk import one_line

if TYPE_CHECKING:
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: the trigger metadata key that names the Docktor service
SERVICE_KEY = "service"
#: the executor a service answered for must have: another would act on the replicas too
EXECUTOR = "keda"
#: work waiting or in flight, by the standard names (a further source's are prefixed ``name.``)
ACTIVITY = ("queue.backlog", "queue.pending", "queue.ack_pending", "queue.lag")
#: what an answer keeps back from the call's own deadline, to be on the wire in time
MARGIN_S = 0.25
#: the most of an unknown service's name a refusal echoes
MAX_NAME_SHOWN = 64


def metric_name(service: str) -> str:
    return f"docktor-{service}"


def in_force(record: DecisionRecord) -> int | None:
    """The count after ``record``: its target once the executor took it, else the count it found
    (a hold; advisory mode, a pause or a failed act leave the count as it was)."""
    if record.executed and record.outcome is not None and record.outcome.status == "ok":
        return record.target_replicas
    return record.current_replicas


def is_active(record: DecisionRecord) -> bool:
    """Work waiting or in flight, or a count above 0 (KEDA scales to 0 only when this is False)."""
    count = in_force(record)
    busy = any(v > 0 for k, v in record.observations.items() if any(k == m or k.endswith(f".{m}") for m in ACTIVITY))
    return busy or (count is not None and count > 0)


async def refuse(context: Any, code: grpc.StatusCode, text: str) -> NoReturn:
    """End the call with ``code`` and the one line ``text`` (``abort`` raises)."""
    await context.abort(code, text)
    raise AssertionError("grpc's abort returned")


class DocktorScaler(pb_grpc.ExternalScalerServicer):
    """The servicer: every answer from the running supervisor's loops."""

    def __init__(self, daemon: Supervisor, *, bound: float) -> None:
        self.daemon = daemon
        self.on_demand = OnDemand(daemon)
        #: the longest any call waits for a decision
        self.bound = bound
        #: the count last told to KEDA per service (a change is logged)
        self.told: dict[str, int] = {}

    # ------------------------------------------------------------------ the questions

    async def GetMetricSpec(self, request: Any, context: Any) -> Any:
        name = await self._service(request, context)
        spec = pb.MetricSpec(metricName=metric_name(name), targetSize=1, targetSizeFloat=1.0)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(self, request: Any, context: Any) -> Any:
        name = await self._service(request.scaledObjectRef, context)
        record = await self._decision(name, context, "GetMetrics")
        count = in_force(record)
        if count is None:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"service {name}: its replica count is unknown ({record.reason})")
        assert count is not None  # mypy: refuse never returns
        if self.told.get(name) != count:  # each change once in the daemon's log, with the decision that made it
            log.info("%s: KEDA is told %d (decision %s of %s)", name, count, record.id, record.ts)
            self.told[name] = count
        value = pb.MetricValue(metricName=request.metricName or metric_name(name), metricValue=count, metricValueFloat=float(count))
        return pb.GetMetricsResponse(metricValues=[value])

    async def IsActive(self, request: Any, context: Any) -> Any:
        name = await self._service(request, context)
        record = await self._decision(name, context, "IsActive")
        return pb.IsActiveResponse(result=is_active(record))

    async def StreamIsActive(self, request: Any, context: Any) -> AsyncIterator[Any]:
        name = await self._service(request, context)
        changed = asyncio.Event()

        def on_record(record: DecisionRecord) -> None:
            if record.service == name:
                changed.set()

        self.daemon.on_record.append(on_record)
        try:
            record: DecisionRecord | None = await self._decision(name, context, "StreamIsActive")
            sent: bool | None = None
            while True:
                if record is not None and is_active(record) != sent:
                    sent = is_active(record)
                    yield pb.IsActiveResponse(result=sent)
                await changed.wait()
                changed.clear()
                loop = self.daemon.loops.get(name)
                if loop is None:  # a reload removed it
                    await refuse(context, grpc.StatusCode.NOT_FOUND, f"service {name} was removed from the config")
                record = loop.last_record
        finally:
            self.daemon.on_record.remove(on_record)

    # ------------------------------------------------------------------ shared

    async def _service(self, ref: Any, context: Any) -> str:
        """The service the trigger names, or the call ends with the code and line that say why."""
        name = str(ref.scalerMetadata.get(SERVICE_KEY, "")).strip()
        if not name:
            await refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                                f"the trigger's metadata has no '{SERVICE_KEY}': name the Docktor service (e.g. {SERVICE_KEY}: worker)")
        loop = self.daemon.loops.get(name)
        if loop is None:
            known = ", ".join(sorted(self.daemon.loops)) or "none"
            shown = repr(name if len(name) <= MAX_NAME_SHOWN else name[:MAX_NAME_SHOWN] + "…")  # a caller's text, kept to one short line
            await refuse(context, grpc.StatusCode.NOT_FOUND, f"no service {shown} in {self.daemon.config.path} (it has: {known})")
        kind = None if loop.svc.executor is None else loop.svc.executor.kind
        if kind != EXECUTOR:
            await refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                                f"service {name} has executor: {kind}, not {EXECUTOR}: Docktor acts on it itself, KEDA must not")
        return name

    async def _decision(self, name: str, context: Any, call: str) -> DecisionRecord:
        """The service's current decision within the call's bound, or the call ends UNAVAILABLE."""
        remaining = context.time_remaining()
        within = self.bound if remaining is None else min(self.bound, max(0.0, remaining - MARGIN_S))
        try:
            answer: Answer = await self.on_demand.decision(name, within)
        except KeyError:  # a reload removed it between the check and now
            await refuse(context, grpc.StatusCode.NOT_FOUND, f"service {name} was removed from the config")
        except Exception as e:  # a bug in a tick must reach KEDA as a failed call, named, not a hang
            log.exception("%s: %s failed", name, call)
            await refuse(context, grpc.StatusCode.UNAVAILABLE, redact(f"service {name}: no decision: {one_line(e)}"))
        if answer.record is None:
            await refuse(context, grpc.StatusCode.UNAVAILABLE, f"service {name}: {answer.note}")
        if answer.note:
            log.warning("%s: %s: %s", name, call, answer.note)
        return answer.record
