"""Which replicas a scale-in removes first, for the executors that can choose (local, Compose,
Kubernetes through pod deletion costs), and one scale at a time, timed (:func:`timed_scale`).

Those not running first (removing them loses nothing), then those not measured yet (started since
the last check: nothing in hand yet), then the lowest CPU in whole percent (so noise does not
decide), ties going to the highest number; each with the reason, for the decision record. Swarm
cannot name the task to remove, so it does not choose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from docktor.tools.sdk import ExecutorError, RemovedReplica, ScaleOutcome

R = TypeVar("R")

UNMEASURED = "no CPU reading yet (started since the last check)"


def idlest_first(
    replicas: Sequence[R],
    count: int,
    *,
    number: Callable[[R], int],
    running: Callable[[R], bool],
    cpu: Callable[[R], float | None],
    not_running: Callable[[R], str],
    unmeasured: str = UNMEASURED,
    measured_over: str = "",
) -> list[tuple[R, str]]:
    """The ``count`` replicas to remove, each with why. ``cpu``: a replica's CPU percent (None:
    not measured); ``measured_over``: what the figures cover, added to the reason (`` over the last 5.0 s``)."""

    def rank(r: R) -> tuple[int, int, int]:
        if not running(r):
            return (0, 0, -number(r))
        figure = cpu(r)
        return (1, 0, -number(r)) if figure is None else (2, int(figure), -number(r))

    ordered = sorted(replicas, key=rank)
    chosen, kept = ordered[:count], ordered[count:]
    kept_cpu = ", ".join(
        f"{number(r)}: {figure:.1f}%" for r in sorted(kept, key=number) if (figure := cpu(r)) is not None
    )
    out = []
    for r in chosen:
        level = rank(r)[0]
        if level == 0:
            why = not_running(r)
        elif level == 1:
            why = unmeasured
        else:
            why = f"lowest CPU: {cpu(r):.1f}%{measured_over}" + (f" (kept {kept_cpu})" if kept_cpu else "")
        out.append((r, why))
    return out


#: an executor's scale step: ``(n, started, removed)`` -> (message, ok, running); it appends
#: the replicas it removed to ``removed`` as it goes, so a failure halfway still reports them
ScaleStep = Callable[[int, float, list[RemovedReplica]], Awaitable[tuple[str, bool, int | None]]]


async def timed_scale(lock: asyncio.Lock, replicas: int, step: ScaleStep) -> ScaleOutcome:
    """One scale at a time per executor, timed, with an ``ExecutorError`` turned into a failed
    outcome (the daemon backs off) instead of a raise (which would read as a bug)."""
    if replicas < 0:
        raise ValueError("replicas must be >= 0")
    async with lock:
        started = time.monotonic()
        removed: list[RemovedReplica] = []
        try:
            message, ok, running = await step(replicas, started, removed)
        except ExecutorError as e:
            message, ok, running = str(e), False, None
        return ScaleOutcome(
            ok=ok, message=message, duration_ms=(time.monotonic() - started) * 1000, running=running, removed=tuple(removed)
        )
