"""What the Kubernetes executor reads from the API's objects: pods (ready, failing to start, how
busy), the controllers already scaling a workload, and its pods' CPU and memory.

Pure functions of the JSON the API returns, so every rule here is testable without a server.
Text a pod relays (a container's waiting message) is scrubbed of control characters and cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from docktor.tools.executors.docker_stats import Sample, aggregate
from docktor.tools.executors.kubernetes_api import quantity
from docktor.tools.sdk import RemovedReplica, scrub

#: the annotation the ReplicaSet controller reads on scale-in: lower cost, deleted first
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: a container waiting for one of these will not start without a change: the scale failed
STUCK = frozenset({
    "ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
#: restarts during one verification that make a pod "restart-looping" (one may be a hiccup), as for Compose
RESTART_LOOP_COUNT = 2


@dataclass(frozen=True)
class Pod:
    """One pod of the workload, as the API reports it."""

    name: str
    #: RFC 3339, as the API writes it (UTC, so the text sorts by time)
    created: str
    phase: str
    ready: bool
    terminating: bool
    restarts: int
    #: (container, reason, message) of each container waiting for a reason
    waiting: tuple[tuple[str, str, str], ...]
    deletion_cost: str | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Pod:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions if isinstance(c, dict))
        containers = [c for c in (status.get("containerStatuses") or []) if isinstance(c, dict)]
        waiting = tuple(
            (str(c.get("name", "")), str(w.get("reason", "")), scrub(str(w.get("message", "")))[:200])
            for c in containers
            if isinstance(w := (c.get("state") or {}).get("waiting"), dict) and w.get("reason")
        )
        return cls(
            name=str(meta.get("name", "")),
            created=str(meta.get("creationTimestamp", "")),
            phase=str(status.get("phase", "Unknown")),
            ready=ready,
            terminating=meta.get("deletionTimestamp") is not None,
            restarts=sum(int(c.get("restartCount") or 0) for c in containers),
            waiting=waiting,
            deletion_cost=(meta.get("annotations") or {}).get(DELETION_COST),
        )

    def problem(self, restarts_since: int | None = None) -> str | None:
        """Why this pod will not run, or None while it is fine or still starting."""
        for container, why, message in self.waiting:
            if why in STUCK:
                return f"pod {self.name} cannot start: container {container} {why}{f' ({message})' if message else ''}"
        if self.phase == "Failed":
            return f"pod {self.name} failed"
        if restarts_since is not None and self.restarts - restarts_since >= RESTART_LOOP_COUNT:
            return f"pod {self.name} is restart-looping ({self.restarts} restarts)"
        return None


def live_pods(items: Iterable[Mapping[str, Any]]) -> list[Pod]:
    """The pods not being deleted, oldest first."""
    pods = [Pod.from_api(i) for i in items]
    return sorted((p for p in pods if not p.terminating), key=lambda p: (p.created, p.name))


def controllers_in_charge(kind: str, name: str, hpas: Sequence[Mapping[str, Any]], scaled: Sequence[Mapping[str, Any]]) -> list[str]:
    """The HPAs and ScaledObjects whose ``scaleTargetRef`` is this workload, as ``HorizontalPodAutoscaler x``.

    A ScaledObject's target kind defaults to Deployment (KEDA's own default)."""
    found = []
    for what, objects, default_kind in (("HorizontalPodAutoscaler", hpas, None), ("ScaledObject", scaled, "Deployment")):
        for obj in objects:
            ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            target_kind = ref.get("kind") or default_kind
            api = str(ref.get("apiVersion") or "apps/v1")
            if ref.get("name") == name and target_kind == kind and api.startswith("apps/"):
                found.append(f"{what} {(obj.get('metadata') or {}).get('name', '?')}")
    return found


def samples(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Sample]:
    """Each pod's CPU (percent of one core) and memory (bytes), summed over its containers; a pod
    with a figure that cannot be read has none."""
    out = {}
    for item in metrics:
        name = (item.get("metadata") or {}).get("name")
        containers = [c for c in item.get("containers") or [] if isinstance(c, dict)]
        if not isinstance(name, str) or not containers:
            continue
        cpu = [quantity((c.get("usage") or {}).get("cpu")) for c in containers]
        mem = [quantity((c.get("usage") or {}).get("memory")) for c in containers]
        out[name] = Sample(
            cpu_pct=None if None in cpu else sum(c for c in cpu if c is not None) * 100.0,
            mem_bytes=None if None in mem else sum(m for m in mem if m is not None),
            mem_limit=None,
        )
    return out


def figures(ready: Sequence[Pod], measured: Mapping[str, Sample]) -> dict[str, float]:
    """``cpu.*``/``mem.*`` over the ready pods; absent unless every ready pod was measured."""
    if not ready or any(p.name not in measured for p in ready):
        return {}
    return aggregate(measured[p.name] for p in ready)


def removed_since(
    before: Sequence[Pod], now: Sequence[Pod], leaving: Sequence[str], ranked: dict[str, str], took: float
) -> list[RemovedReplica]:
    """The pods deleted since ``before``, each with why it went (as ranked, or the controller's own
    choice) and whether it is gone or still draining."""
    live = {p.name for p in now}
    return [
        RemovedReplica(
            p.name,
            ranked.get(p.name, "chosen by the controller, not ranked by Docktor to go"),
            f"deleted by the controller; still terminating (its grace period) {took:.1f} s after the scale" if p.name in leaving
            else f"deleted by the controller; gone from the API within {took:.1f} s (SIGTERM, the pod's own grace period)",
        )
        for p in before if p.name not in live
    ]
