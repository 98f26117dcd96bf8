"""Scale one Kubernetes Deployment or StatefulSet through its ``/scale`` subresource, and verify
from the API that the pods run.

A scale reads the ``/scale`` subresource and patches ``spec.replicas`` with the
``resourceVersion`` it read: when someone else changed the object meanwhile, the API answers 409,
and the executor reads again and decides again (never overwriting blindly), a few times at most.
It then waits (``scale_timeout``) until the workload's ``status.readyReplicas`` and its live pods
are the count asked for; a pod whose container waits for ImagePullBackOff, ErrImagePull,
CrashLoopBackOff (or another reason it will not leave without a change) makes the scale a failed
outcome carrying the pod's own reason, and the daemon backs off, as for Compose.

Before a Deployment scales in, its pods get ``controller.kubernetes.io/pod-deletion-cost``,
lowest on the idlest (:func:`.scale_in.idlest_first` over the pods: not ready first, then the
lowest CPU from ``metrics.k8s.io``, ties to the newest), so the ReplicaSet controller removes
those; the outcome records which pods went, why, and whether they were the ones ranked. A
StatefulSet always removes its highest ordinals: recorded as such.

Docktor refuses to scale a workload a HorizontalPodAutoscaler or a KEDA ScaledObject already
targets (two controllers would fight), naming it.

The client is the SDK's HTTP client over the few REST endpoints used (:mod:`.kubernetes_api`);
credentials come from a kubeconfig or the pod's service account (:mod:`.kubernetes_config`),
through :class:`.kubernetes_access.WorkloadAccess`, which ``executor: keda`` shares.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from docktor.tools.executors.kubernetes_access import WorkloadAccess
from docktor.tools.executors.kubernetes_api import ApiError, KubeApi
from docktor.tools.executors.kubernetes_config import KubernetesSettings
from docktor.tools.executors.kubernetes_pods import (
    DELETION_COST,
    Pod,
    controllers_in_charge,
    figures,
    live_pods,
    removed_since,
    samples,
)
from docktor.tools.executors.scale_in import idlest_first, timed_scale
from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    RemovedReplica,
    ReplicaStatus,
    ScaleOutcome,
    standard,
)

__all__ = ["KubernetesExecutor", "KubernetesSettings"]

POLL_S = 0.5
#: attempts at a scale that the API refuses because the object changed since it was read (409)
UPDATE_ATTEMPTS = 3
#: the Role a 403 points at
RBAC = "examples/kubernetes/executor/rbac.yaml"


class KubernetesExecutor(Executor[KubernetesSettings]):
    """Scales one Deployment or StatefulSet through the Kubernetes API and verifies its pods."""

    Settings = KubernetesSettings
    provides = standard("cpu.avg", "cpu.max", "mem.avg_mb", "mem.max_mb")

    def __init__(self, settings: KubernetesSettings, context: Context) -> None:
        super().__init__(settings, context)
        self.workload_kind = settings.workload_kind
        self.name = settings.workload or context.service
        self.access = WorkloadAccess(settings, context, self.name, rbac=RBAC)
        self._lock = asyncio.Lock()
        #: why the last scale-in could not rank by CPU (metrics.k8s.io did not answer), for its record
        self.metrics_problem: str | None = None

    @classmethod
    def describe(cls, settings: KubernetesSettings) -> str:
        where = f"{settings.namespace}/" if settings.namespace else ""
        return f"kubernetes {settings.workload_kind} {where}{settings.workload or '(the service name)'}"

    @classmethod
    def check(cls, settings: KubernetesSettings, context: Context) -> list[str]:
        """The credentials can be found and read (no request is made: the config may be for another machine)."""
        return WorkloadAccess.check(settings, context)

    def __repr__(self) -> str:
        return f"KubernetesExecutor({self.workload_kind} {self.name!r})"

    def target(self) -> str:
        """The API server, namespace, kind and name, whichever config names them."""
        return self.access.target()

    @property
    def label(self) -> str:
        return self.access.label

    def api(self) -> KubeApi:
        return self.access.api()

    async def close(self) -> None:
        await self.access.close()

    # ----------------------------------------------------------------- status

    async def status(self) -> ReplicaStatus:
        api = self.api()
        try:
            return await self._status(api)
        except ApiError as e:
            raise ExecutorError(self.access.explain(e, api.namespace)) from None

    async def _status(self, api: KubeApi) -> ReplicaStatus:
        workload = await api.workload(self.workload_kind, self.name)
        selector = _selector(workload, self.label)
        pods = live_pods(await api.pods(selector))
        problems = [p for pod in pods if (p := pod.problem()) is not None]
        measured = await self._measure(api, selector)
        ready = ((workload.get("status") or {}).get("readyReplicas")) or 0
        desired = (workload.get("spec") or {}).get("replicas")
        starting = [p for p in pods if not p.ready and p.problem() is None]
        detail = "; ".join(filter(None, ["; ".join(problems), f"{len(starting)} starting" if starting else ""]))
        return ReplicaStatus(
            desired=int(desired if desired is not None else 1), running=int(ready), failed=len(problems),
            detail=detail, metrics=figures([p for p in pods if p.ready], measured or {}),
        )

    async def _measure(self, api: KubeApi, selector: str) -> dict[str, Any] | None:
        """Each pod's CPU and memory from ``metrics.k8s.io``; None (and why, kept) when it does not answer."""
        try:
            measured = samples(await api.pod_metrics(selector))
        except ExecutorError as e:
            self.metrics_problem = f"metrics.k8s.io does not answer ({e})"
            return None
        self.metrics_problem = None
        return measured

    # ----------------------------------------------------------------- scale

    async def scale(self, replicas: int) -> ScaleOutcome:
        return await timed_scale(self._lock, replicas, self._scale)

    async def _scale(self, n: int, started: float, removed: list[RemovedReplica]) -> tuple[str, bool, int | None]:
        api = self.api()
        try:
            return await self._scale_with(api, n, started, removed)
        except ApiError as e:
            raise ExecutorError(self.access.explain(e, api.namespace)) from None

    async def _scale_with(self, api: KubeApi, n: int, started: float, removed: list[RemovedReplica]) -> tuple[str, bool, int | None]:
        in_charge = controllers_in_charge(self.workload_kind, self.name, await api.autoscalers(), await api.scaled_objects())
        if in_charge:
            return (
                f"refusing to scale {self.label} in namespace {api.namespace}: {', '.join(in_charge)} already scales it "
                "(two controllers would fight); remove it, or let Docktor decide through KEDA (executor: keda)",
                False, None,
            )
        for _ in range(UPDATE_ATTEMPTS):
            scale = await api.scale(self.workload_kind, self.name)
            version = str((scale.get("metadata") or {}).get("resourceVersion") or "")
            if not version:  # without it the write would be unconditional: never write blind
                raise ExecutorError(f"the Kubernetes API gave {self.label}/scale no resourceVersion: not scaled")
            current = int((scale.get("spec") or {}).get("replicas") or 0)
            selector = _selector(scale, self.label)
            before = live_pods(await api.pods(selector))
            ranked = await self._rank(api, before, selector, current - n) if n < current else {}
            try:
                await api.set_replicas(self.workload_kind, self.name, n, version)
                break
            except ApiError as e:
                if e.code != 409:
                    raise
                # changed since it was read: read it again and decide again, never overwrite it
        else:
            return (f"{self.label} changed under Docktor {UPDATE_ATTEMPTS} times in a row (409 Conflict): "
                    "not scaled, to avoid overwriting another writer", False, None)
        return await self._verify(api, n, started, selector, before, ranked, removed)

    async def _rank(self, api: KubeApi, pods: Sequence[Pod], selector: str, count: int) -> dict[str, str]:
        """The ``count`` pods that should go, each with why; for a Deployment, their deletion costs set
        (lowest on the idlest) so the ReplicaSet controller removes those."""
        if self.workload_kind == "StatefulSet":
            by_ordinal = sorted(pods, key=lambda p: _ordinal(p.name), reverse=True)
            return {p.name: "a StatefulSet removes its highest ordinal first" for p in by_ordinal[:count]}
        measured = await self._measure(api, selector)
        age = {p.name: i for i, p in enumerate(pods)}  # newer, higher: ties go to the newest
        ordered = idlest_first(
            pods, len(pods),
            number=lambda p: age[p.name],
            running=lambda p: p.ready,
            cpu=lambda p: None if measured is None or p.name not in measured else measured[p.name].cpu_pct,
            not_running=lambda p: f"not ready ({p.phase}{''.join(f', {w[1]}' for w in p.waiting)})",
            unmeasured="no CPU reading from metrics.k8s.io for it" if measured is not None else f"newest first: {self.metrics_problem}",
        )
        for cost, (pod, _) in enumerate(ordered, start=-count):
            if pod.deletion_cost != str(cost):
                await api.annotate(pod.name, {DELETION_COST: str(cost)})
        return {pod.name: f"{why} (pod-deletion-cost {cost})" for cost, (pod, why) in enumerate(ordered[:count], start=-count)}

    async def _verify(
        self, api: KubeApi, n: int, started: float, selector: str, before: Sequence[Pod], ranked: dict[str, str],
        removed: list[RemovedReplica],
    ) -> tuple[str, bool, int | None]:
        """Wait until ``n`` pods are ready and no other is live; a pod that cannot start ends it."""
        restarts = {p.name: p.restarts for p in before}
        deadline = started + self.settings.scale_timeout
        while True:
            status = (await api.workload(self.workload_kind, self.name)).get("status") or {}
            ready = int(status.get("readyReplicas") or 0)
            listed = await api.pods(selector)
            pods = live_pods(listed)
            # a removed pod drains (SIGTERM, its grace period) while it is terminating: wait for it to be gone
            leaving = [name for name in (Pod.from_api(i).name for i in listed) if name not in {p.name for p in pods}]
            problems = [p for pod in pods if (p := pod.problem(restarts.get(pod.name, 0))) is not None]
            done = ready == n and len(pods) == n and all(p.ready for p in pods) and not leaving
            if problems or done or time.monotonic() >= deadline:
                removed.extend(removed_since(before, pods, leaving, ranked, time.monotonic() - started))
            if problems:
                return f"scaling {self.label} to {n} failed: {'; '.join(problems)}", False, ready
            if done:
                gone = f"; removed {', '.join(r.replica for r in removed)}" if removed else ""
                return f"{n} ready after {(time.monotonic() - started) * 1000:.0f} ms{gone}", True, n
            if time.monotonic() >= deadline:
                waiting = ", ".join(f"{p.name} {p.phase}" for p in pods if not p.ready)
                draining = f"; {len(leaving)} still terminating" if leaving else ""
                return (f"scaling {self.label} to {n} not done after {self.settings.scale_timeout:g}s: {ready}/{n} ready, "
                        f"{len(pods)} pods{f' ({waiting} not ready)' if waiting else ''}{draining}"), False, ready
            await asyncio.sleep(POLL_S)


def _selector(obj: dict[str, Any], label: str) -> str:
    """The label selector of a Scale (``status.selector``) or a workload (``spec.selector.matchLabels``)."""
    selector = (obj.get("status") or {}).get("selector")
    if isinstance(selector, str) and selector:
        return selector
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not labels:
        raise ExecutorError(f"{label} has no label selector the executor can list its pods by")
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _ordinal(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1

