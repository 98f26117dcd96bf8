"""A Swarm service as its tasks show it: per slot, the newest task meant to run, why a slot is not
running, and how the tasks a scale-in removed ended.

Everything here is read from the Engine API; the text of a task's error comes from the engine and
the node (an image name, a scheduler's reason) and is scrubbed of control characters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from docktor.tools.executors.docker_engine import Engine
from docktor.tools.sdk import ExecutorError, RemovedReplica, scrub

#: desired states of a task meant to run (``ready``: waiting out a restart delay)
WANTED = ("running", "ready", "accepted", "assigned", "preparing", "starting", "new", "pending")
#: observed states after which a task never runs again
ENDED = ("complete", "shutdown", "failed", "rejected", "orphaned", "remove")
FAILED = ("failed", "rejected", "orphaned")


def engine_time(text: str | None) -> float:
    """An engine timestamp (RFC 3339 with up to 9 fraction digits) as seconds since the epoch."""
    if not text:
        return 0.0
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return 0.0
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = datetime.fromisoformat(m.group(1) + zone).astimezone(UTC).timestamp()
    return whole + float("0." + (m.group(2) or "0"))


@dataclass(frozen=True)
class Task:
    id: str
    name: str  # service.slot, as `docker service ps` shows it
    slot: int
    node: str
    desired: str
    state: str
    error: str
    created: float
    container: str | None
    exit_code: int | None

    @property
    def wanted(self) -> bool:
        return self.desired in WANTED

    @property
    def running(self) -> bool:
        return self.wanted and self.state == "running"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def failed(self) -> bool:
        """Rejected or failed, or unschedulable (pending with the scheduler's reason)."""
        return self.state in FAILED or (self.state == "pending" and bool(self.error))

    def problem(self) -> str:
        said = self.error or (f"exit code {self.exit_code}" if self.exit_code else "")
        return f"task {self.name} {self.state}: {said or 'no reason given'}"

    @classmethod
    def from_api(cls, service: str, t: dict[str, Any]) -> Task:
        status = t.get("Status") or {}
        container = status.get("ContainerStatus") or {}
        slot = int(t.get("Slot") or 0)
        code = container.get("ExitCode")
        return cls(
            id=t["ID"],
            name=f"{service}.{slot}",
            slot=slot,
            node=t.get("NodeID") or "",
            desired=t.get("DesiredState") or "",
            state=status.get("State") or "",
            error=scrub(status.get("Err") or ""),
            created=engine_time(t.get("CreatedAt")),
            container=container.get("ContainerID") or None,
            exit_code=int(code) if code is not None else None,
        )


@dataclass(frozen=True)
class View:
    """The service as its tasks show it: per slot, the newest task meant to run."""

    desired: int
    current: dict[int, Task]
    tasks: list[Task]

    @classmethod
    def of(cls, desired: int, tasks: Iterable[Task]) -> View:
        items = sorted(tasks, key=lambda t: t.created)
        current: dict[int, Task] = {}
        for t in items:
            if t.wanted:
                current[t.slot] = t  # newest last
        return cls(desired, current, items)

    @property
    def running(self) -> list[Task]:
        return [t for t in self.current.values() if t.running]

    def problems(self, since: set[str] | None = None) -> list[str]:
        """Why slots are not running: their current task failed, was rejected or cannot be placed,
        or (``since``: the ids that existed before a scale) a task started since then failed."""
        found: dict[int, str] = {}
        for t in self.current.values():
            if t.failed:
                found[t.slot] = t.problem()
        if since is not None:
            for t in self.tasks:
                if t.id not in since and t.state in FAILED and t.slot not in found:
                    found[t.slot] = t.problem()
        if since is None:
            # a slot restarting after a failure: its current task waits, the previous one says why
            for slot, t in self.current.items():
                if slot in found or t.running:
                    continue
                history = [h for h in self.tasks if h.slot == slot and h.state in FAILED]
                if history:
                    found[slot] = f"{history[-1].problem()}, restarting"
        return [found[s] for s in sorted(found)]


async def note_removed(
    engine: Engine,
    node_id: str | None,
    removed: list[RemovedReplica],
    was_running: dict[str, Task],
    by_id: dict[str, Task],
    ended_at: dict[str, float],
    updated: tuple[float, float],
    grace: float,
    stop_signal: str,
) -> None:
    """Which tasks Swarm removed and how each ended.

    Swarm deletes a removed task moments after it ends, exit code and all; for tasks on the
    node Docktor talks to, the engine's events tell (``kill`` with the signal, ``die`` with
    the exit code). For tasks elsewhere only the time it took is known.
    """
    why = "chosen by Swarm (tasks not running first, then the node with the most; the Engine API cannot name one)"
    gone = [t for tid, t in sorted(was_running.items(), key=lambda kv: kv[1].slot) if not (tid in by_id and by_id[tid].wanted)]
    local = [t.container for t in gone if t.container and t.node == node_id]
    events = await stop_events(engine, local, updated[1]) if local else {}
    for before in gone:
        if before.id not in ended_at:
            removed.append(RemovedReplica(before.name, why, "still stopping"))
            continue
        seen = events.get(before.container or "")
        if seen is not None and seen.get("killed"):
            how = f"ignored {stop_signal} for {grace:g} s: SIGKILL"
        elif seen is not None and "exit" in seen:
            took = f"{seen['took']:.1f} s after" if "took" in seen else "after"
            how = f"exited with code {seen['exit']} {took} {stop_signal}"
        else:
            how = f"gone within {max(0.0, ended_at[before.id] - updated[0]):.1f} s of {stop_signal}"
        removed.append(RemovedReplica(before.name, why, how))

async def stop_events(engine: Engine, containers: list[str], since_wall: float) -> dict[str, dict[str, Any]]:
    """Per container: whether it was SIGKILLed, its exit code, seconds from the first signal to exit."""
    api = engine.api
    wanted = set(containers)

    def read() -> list[dict[str, Any]]:
        stream = api.events(
            since=int(since_wall) - 1, until=int(time.time()) + 1,
            filters={"type": "container", "event": ["kill", "die"]}, decode=True,
        )
        return [e for e in stream if (e.get("Actor") or {}).get("ID") in wanted]

    try:
        events = await engine.call(read, timeout=10.0)
    except ExecutorError:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e.get("timeNano") or 0):
        cid = e["Actor"]["ID"]
        attrs = e["Actor"].get("Attributes") or {}
        info = out.setdefault(cid, {})
        at = (e.get("timeNano") or 0) / 1e9
        if e.get("Action") == "kill":
            info.setdefault("signalled", at)
            if attrs.get("signal") in ("9", "SIGKILL", "KILL"):
                info["killed"] = True
        elif e.get("Action") == "die":
            info["exit"] = attrs.get("exitCode", "?")
            if "signalled" in info:
                info["took"] = max(0.0, at - info["signalled"])
    return out
