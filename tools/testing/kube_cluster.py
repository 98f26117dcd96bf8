"""The state behind :class:`~docktor.tools.testing.kube_standin.KubeStandIn`: workloads, their pods,
autoscalers and ScaledObjects, and the JSON the Kubernetes API would show of them.

A STAND-IN, not Kubernetes: it keeps only what the executor reads and writes, with the API's
documented semantics for those parts. Every write bumps one resourceVersion counter (etcd's
revision); a workload's pods follow its replica count at once: new pods are Pending, then Ready
after ``ready_after`` seconds unless the test scripted a waiting reason (ImagePullBackOff ...);
excess pods go in the ReplicaSet controller's documented order (not ready before ready, then the
lower ``controller.kubernetes.io/pod-deletion-cost``, then the newer), or for a StatefulSet the
highest ordinal first. A deleted pod is listed with its ``deletionTimestamp`` (terminating, no
longer counted by its workload) for ``terminate_after`` seconds, then gone; nothing runs in it.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodState:
    name: str
    labels: dict[str, str]
    created: float
    ready_at: float
    #: a scripted reason the container waits for (it never becomes ready)
    waiting: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    #: CPU in cores and memory in bytes, as metrics.k8s.io reports them
    cpu: float = 0.05
    memory: float = 64 * 2**20
    restarts: int = 0
    version: int = 0
    #: when it was deleted (it is terminating until the stand-in's terminate_after has passed)
    deleted_at: float | None = None

    def ready(self, now: float) -> bool:
        return self.waiting is None and now >= self.ready_at

    def as_json(self, namespace: str, now: float) -> dict[str, Any]:
        ready = self.ready(now)
        if self.waiting is not None:
            state: dict[str, Any] = {"waiting": {"reason": self.waiting, "message": f"stand-in: {self.waiting} scripted by the test"}}
        elif ready:
            state = {"running": {"startedAt": rfc3339(self.created)}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": self.name, "namespace": namespace, "labels": dict(self.labels), "annotations": dict(self.annotations),
                "creationTimestamp": rfc3339(self.created), "resourceVersion": str(self.version),
                **({"deletionTimestamp": rfc3339(self.deleted_at)} if self.deleted_at is not None else {}),
            },
            "spec": {"containers": [{"name": "worker", "image": "worker:stand-in"}]},
            "status": {
                "phase": "Running" if ready else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [{"name": "worker", "ready": ready, "restartCount": self.restarts, "state": state}],
            },
        }


@dataclass
class WorkloadState:
    kind: str  # Deployment or StatefulSet
    name: str
    namespace: str
    replicas: int
    labels: dict[str, str]
    version: int
    #: what new pods' containers wait for (None: they start)
    waiting: str | None = None
    pods: list[PodState] = field(default_factory=list)

    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


def deletion_rank(pod: PodState, now: float) -> tuple[int, int, float]:
    """The ReplicaSet controller's order for pods to delete (the first goes first): not ready
    before ready, the lower deletion cost first, the newer first."""
    try:
        cost = int(pod.annotations.get(DELETION_COST, "0"))
    except ValueError:
        cost = 0
    return (1 if pod.ready(now) else 0, cost, -pod.created)


class Cluster:
    """The objects; callers hold :attr:`KubeStandIn.lock` while they use it."""

    def __init__(self, ready_after: float, terminate_after: float = 0.0) -> None:
        self.ready_after = ready_after
        self.terminate_after = terminate_after
        self._revision = itertools.count(1000)
        self.workloads: dict[tuple[str, str, str], WorkloadState] = {}
        #: (namespace, kind, name) -> the scaleTargetRef of each HPA / ScaledObject
        self.hpas: dict[tuple[str, str], dict[str, str]] = {}
        self.scaled_objects: dict[tuple[str, str], dict[str, str]] = {}

    def bump(self) -> int:
        return next(self._revision)

    def add_workload(self, kind: str, name: str, replicas: int = 1, namespace: str = "default", waiting: str | None = None) -> WorkloadState:
        w = WorkloadState(kind, name, namespace, replicas, {"app": name}, self.bump(), waiting)
        self.workloads[(namespace, kind, name)] = w
        self.reconcile(w, time.time() - self.ready_after)  # the pods that exist at the start are ready
        return w

    def reconcile(self, w: WorkloadState, now: float | None = None) -> None:
        """The workload's pods brought to its replica count, as its controller would."""
        created = time.time() if now is None else now
        self.prune(w)
        active = [p for p in w.pods if p.deleted_at is None]
        while len(active) < w.replicas:
            if w.kind == "StatefulSet":
                name = f"{w.name}-{len(active)}"
            else:
                name = f"{w.name}-7d9f8c6b5-{secrets.token_hex(3)[:5]}"
            pod = PodState(name, dict(w.labels), created, created + self.ready_after, w.waiting, version=self.bump())
            w.pods.append(pod)
            active.append(pod)
        excess = len(active) - w.replicas
        if excess > 0:
            if w.kind == "StatefulSet":
                doomed = active[w.replicas:]
            else:
                doomed = sorted(active, key=lambda p: deletion_rank(p, time.time()))[:excess]
            for pod in doomed:
                pod.deleted_at, pod.version = time.time(), self.bump()
            self.prune(w)

    def prune(self, w: WorkloadState) -> None:
        """Drop the pods whose termination has run its course."""
        now = time.time()
        w.pods = [p for p in w.pods if p.deleted_at is None or now < p.deleted_at + self.terminate_after]

    def workload_json(self, w: WorkloadState) -> dict[str, Any]:
        now = time.time()
        self.prune(w)
        active = [p for p in w.pods if p.deleted_at is None]  # a terminating pod is no longer counted
        ready = sum(1 for p in active if p.ready(now))
        status: dict[str, Any] = {"replicas": len(active), "observedGeneration": 1}
        if ready:  # the API leaves zero counts out
            status["readyReplicas"] = status["availableReplicas"] = ready
        return {
            "apiVersion": "apps/v1", "kind": w.kind,
            "metadata": {"name": w.name, "namespace": w.namespace, "resourceVersion": str(w.version), "generation": 1},
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": dict(w.labels)}},
            "status": status,
        }

    def scale_json(self, w: WorkloadState) -> dict[str, Any]:
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": w.name, "namespace": w.namespace, "resourceVersion": str(w.version)},
            "spec": {"replicas": w.replicas},
            "status": {"replicas": sum(1 for p in w.pods if p.deleted_at is None), "selector": w.selector()},
        }

    def pods_matching(self, namespace: str, selector: str) -> list[tuple[WorkloadState, PodState]]:
        wanted = parse_selector(selector)
        for w in self.workloads.values():
            self.prune(w)
        return [
            (w, p) for w in self.workloads.values() if w.namespace == namespace
            for p in w.pods if all(p.labels.get(k) == v for k, v in wanted.items())
        ]

    def pod(self, namespace: str, name: str) -> PodState | None:
        return next((p for w in self.workloads.values() if w.namespace == namespace for p in w.pods if p.name == name), None)

    def targets_json(self, kind: str, api_version: str, objects: dict[tuple[str, str], dict[str, str]], namespace: str) -> dict[str, Any]:
        items = [
            {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": {"scaleTargetRef": dict(ref)}}
            for (ns, name), ref in objects.items() if ns == namespace
        ]
        return {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {"resourceVersion": str(self.bump())}, "items": items}


def parse_selector(selector: str) -> dict[str, str]:
    """An equality-based label selector (``app=worker,tier=queue``; ``==`` too)."""
    out = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.replace("==", "=").partition("=")
        out[key.strip()] = value.strip()
    return out


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch (a null removes the key)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out
