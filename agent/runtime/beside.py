"""The LLM beside the loop: a tick never waits for the model.

The daemon calls :func:`docktor.agent.core.decide.step` with the callback of
:meth:`AdvisorBeside.advise_for`, the same step the simulator runs. Per tick and service, the
callback:

1. if an answer has landed since the last tick, returns it, to be clamped into *this* tick's
   envelope (the direction rule of this tick's plan; never below a deterministic scale-up): the
   tick's decision is the LLM's, recorded as its own decision with when it was asked and how long
   it took (``llm.landed``);
2. else, while a call is in flight (at most one per service), returns nothing: the deterministic
   decision acts at once (``llm.in_flight``);
3. else asks the advisor whether this tick is worth a call (:meth:`Advisor.consider`) and, if so,
   starts it as a task and returns nothing; a reused earlier answer is returned as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docktor.agent.advisor.advisor import Advisor
from docktor.agent.advisor.gate import llm_envelope
from docktor.agent.advisor.protocol import ToolContext
from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.decide import Advice, Plan, deterministic_source
from docktor.agent.core.state import ServiceState
from docktor.agent.redact import redact
from docktor.agent.timestamps import rfc3339

if TYPE_CHECKING:
    from docktor.agent.runtime.service_loop import ServiceLoop
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")


@dataclass
class _Call:
    task: asyncio.Task[Advice]
    asked_at: float  # the daemon's monotonic clock
    asked_wall: float
    why: str


class AdvisorBeside:
    def __init__(self, advisor: Advisor, tools: ToolContext, *, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic):
        self.advisor = advisor
        self.tools = tools
        self.wall, self.mono = wall, mono
        self.calls: dict[str, _Call] = {}  # service -> its call in flight (or ended, not yet applied)

    def advise_for(self, svc: ServiceConfig, state: ServiceState, now: float) -> Callable[[Plan], Advice | None]:
        """The ``advise`` callback of one tick of ``svc``."""

        def advise(plan: Plan) -> Advice | None:
            call = self.calls.get(svc.name)
            if call is not None and call.task.done():
                del self.calls[svc.name]
                return self._landed(svc, plan, state, now, call)
            if call is not None:
                return Advice(None, deterministic_source(svc), {
                    **self._who(), "asked": False,
                    "why": f"a call is in flight (asked {rfc3339(call.asked_wall)}, {now - call.asked_at:.1f} s ago: "
                           f"{call.why}); deciding without it",
                    "in_flight": {"asked_at": rfc3339(call.asked_wall), "age_s": round(now - call.asked_at, 1)},
                })
            advice, env = self.advisor.consider(svc, plan, state, now)
            if env is None:
                return advice
            record = dict(advice.record or {})
            snapshot = dataclasses.replace(state, history=deque(state.history, maxlen=state.history.maxlen))
            task = asyncio.get_running_loop().create_task(
                self.advisor.call(svc, plan, snapshot, self.tools, now, env, record), name=f"llm:{svc.name}"
            )
            self.calls[svc.name] = _Call(task, now, self.wall(), str(record.get("why", "")))
            record.update(asked=True, in_flight={"asked_at": rfc3339(self.wall()), "age_s": 0.0})
            return Advice(None, deterministic_source(svc), record)

        return advise

    def _landed(self, svc: ServiceConfig, plan: Plan, state: ServiceState, now: float, call: _Call) -> Advice:
        try:
            advice = call.task.result()
        except BaseException as e:  # the advisor never raises; a cancelled call is a fallback too
            advice = Advice(None, "fallback", {**self._who(), "asked": True, "error": f"call ended: {type(e).__name__}"})
        record = dict(advice.record or {})
        record["landed"] = {"asked_at": rfc3339(call.asked_wall), "after_s": round(now - call.asked_at, 1)}
        if advice.proposal is None:
            return Advice(None, advice.source, record)
        # Applied inside the envelope of the tick it lands in: this plan's direction rule.
        env = llm_envelope(svc, plan, state, now, self.advisor.config.may_act_without_rules, self.advisor.allowance)
        record["envelope_asked"] = record.get("envelope")
        record["envelope"] = [env.lo, env.hi]
        return Advice(advice.proposal, "llm", record, env, self.advisor.allowance)

    def _who(self) -> dict[str, Any]:
        return {"provider": self.advisor.endpoint.provider, "model": self.advisor.endpoint.model}

    def in_flight(self, service: str) -> bool:
        call = self.calls.get(service)
        return call is not None and not call.task.done()

    async def settle(self, timeout: float) -> list[str]:
        """Wait (at most ``timeout``) for the calls in flight; the services whose answer is in."""
        tasks = [c.task for c in self.calls.values() if not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return [name for name, c in self.calls.items() if c.task.done()]

    async def close(self) -> None:
        for call in self.calls.values():
            call.task.cancel()
        for call in self.calls.values():
            with contextlib.suppress(BaseException):
                await call.task
        self.calls.clear()


class AdvisorTools:
    """What the LLM advisor's tool calls may see: read-only views of the daemon's service loops."""

    def __init__(self, daemon: Supervisor):
        self._d = daemon

    def _loop(self, service: str) -> ServiceLoop:
        if service not in self._d.loops:
            raise KeyError(f"unknown service {service!r}")
        return self._d.loops[service]

    def queue_metrics(self, service: str) -> dict[str, float]:
        return dict(self._loop(service).last_observations)

    def service_status(self, service: str) -> dict[str, Any]:
        loop = self._loop(service)
        s = loop.last_status
        if s is None:
            return {"available": False}
        return {"available": True, "desired": s.desired, "running": s.running, "failed": s.failed, "healthy": s.healthy,
                "detail": redact(s.detail or ""), "min_replicas": loop.svc.min_replicas, "max_replicas": loop.svc.max_replicas}

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        return self._loop(service).recent[-max(0, n):]

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        loop = self._loop(service)
        since = self._d.mono() - minutes * 60
        return [(t, obs[metric]) for t, obs in loop.state.history if t >= since and metric in obs]
