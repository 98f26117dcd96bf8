"""``executor: keda``: Docktor decides, KEDA and the Kubernetes HPA act.

The service's pods run on Kubernetes under a KEDA ScaledObject whose ``external`` trigger asks
``docktor keda`` (``agent/keda/``) for a metric: the replica count Docktor decided. So this
executor has nothing to actuate. ``scale(n)`` records ``n`` as the count KEDA is to be told (and
says so in its outcome); the HPA sets the Deployment's replicas at its next sync.

The metric request carries no replica count, so ``status()`` learns it (``docs/keda.md``, "How
Docktor learns the current count"): when the settings name the workload (``workload:``, with the
same ``workload_kind``/``namespace``/``kubeconfig``/``context`` as ``executor: kubernetes``), from
its ``/scale`` subresource, the HPA's view (``spec.replicas`` desired, ``status.replicas``
running); when that cannot be read (no credentials, unreachable, 401/403/404, no answer within
``request_timeout``), and when no workload is named, the count last asked of KEDA, the detail
saying why. It only ever reads the API (``get`` on ``deployments/scale``): KEDA and the HPA write.

The count asked for is kept in ``<state_dir>/keda/<service>.json`` (``0600``, written whole), so
a restarted ``docktor keda`` answers KEDA with the count it had, not with ``initial_replicas``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from pydantic import Field

from docktor.tools.executors.kubernetes_access import WorkloadAccess
from docktor.tools.executors.kubernetes_api import ApiError
from docktor.tools.executors.kubernetes_config import WorkloadSettings
from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    ReplicaStatus,
    ScaleOutcome,
    UnsafePath,
    one_line,
    private_dir,
    read_private,
    write_atomic,
)

#: a ScaledObject's name, as ``namespace/name`` (DNS-1123 labels)
_SCALED_OBJECT = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$"
#: the Role a 403 points at: ``get`` on the workloads' ``/scale``
RBAC = "examples/kubernetes/docktor-keda.yaml"


class KedaSettings(WorkloadSettings):
    """``executor: keda``: the count is served to KEDA by ``docktor keda``; nothing is actuated here.

    The workload settings (:class:`WorkloadSettings`) are optional: with ``workload:`` the current
    count is read from its ``/scale`` (``namespace`` default: the ScaledObject's, then the
    credentials'); without it, the count last asked for is the current count."""

    kind: Literal["keda"]
    #: the count Docktor assumes before it has asked for any (its first start): the Deployment's
    #: ``spec.replicas`` at that moment. Required: a wrong guess would size the first decisions'
    #: step limits and cooldowns from a count that is not running
    initial_replicas: int = Field(ge=0)
    #: the ScaledObject whose trigger names this service, ``namespace/name``: shown by ``validate``
    #: and the one actor on it (a second config serving it is refused)
    scaled_object: str | None = Field(default=None, pattern=_SCALED_OBJECT)


class KedaExecutor(Executor[KedaSettings]):
    """The count KEDA is told, kept between restarts. The HPA acts on it; nothing here runs a replica."""

    Settings = KedaSettings
    delegates = True

    def __init__(self, settings: KedaSettings, context: Context) -> None:
        super().__init__(settings, context)
        self.path = context.state_dir / "keda" / f"{context.service}.json"
        self._asked: int | None = None
        #: the workload whose /scale is read for the current count, when the settings name one
        self.access = None if settings.workload is None else WorkloadAccess(
            settings, context, settings.workload, rbac=RBAC, namespace=_namespace_of(settings.scaled_object),
        )

    @classmethod
    def describe(cls, settings: KedaSettings) -> str:
        what = f"keda {settings.scaled_object}" if settings.scaled_object else "keda (the count served by docktor keda)"
        if settings.workload is None:
            return what
        where = settings.namespace or _namespace_of(settings.scaled_object)
        return f"{what} (reads {settings.workload_kind} {f'{where}/' if where else ''}{settings.workload}/scale)"

    @classmethod
    def check(cls, settings: KedaSettings, context: Context) -> list[str]:
        """With a workload named: its credentials can be found and read (no request is made). Not
        finding them is a warning, not an error: status falls back to the count last asked for."""
        if settings.workload is None:
            return []
        return [f"{line}: the current count will be the one last asked of KEDA"
                for line in WorkloadAccess.check(settings, context)]

    async def close(self) -> None:
        if self.access is not None:
            await self.access.close()

    def target(self) -> str | None:
        return None if self.settings.scaled_object is None else self.settings.scaled_object

    def asked(self) -> int:
        """The count last asked for: in memory, else the saved one, else ``initial_replicas``.

        Raises :class:`ExecutorError` when the saved file is unsafe or does not hold a count."""
        if self._asked is None:
            self._asked = self._saved()
        return self._asked

    def _saved(self) -> int:
        try:
            raw = read_private(self.path)
        except (UnsafePath, OSError) as e:
            raise ExecutorError(f"the count asked of KEDA cannot be read from {self.path}: {one_line(e)}") from None
        if raw is None:
            return self.settings.initial_replicas
        try:
            count = json.loads(raw)["replicas"]
        except (ValueError, KeyError, TypeError):
            count = None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ExecutorError(f"{self.path} does not hold a replica count (remove it to start from initial_replicas)")
        return count

    async def status(self) -> ReplicaStatus:
        if self.access is None:
            n = self.asked()
            # running = the count asked for: without a workload named, the pods the HPA runs are not read
            return ReplicaStatus(desired=n, running=n, detail=f"{n} asked of KEDA (the pods the HPA runs are not read: no workload named)")
        try:
            return await self._read_scale(self.access)
        except ExecutorError as e:
            why = one_line(e)
        n = self.asked()
        which = "the count last asked of KEDA" if self._last_asked() is not None else "initial_replicas (nothing asked of KEDA yet)"
        # the count asked for stands in for the HPA's view; unhealthy, so each record says why
        return ReplicaStatus(desired=n, running=n, healthy=False, detail=f"{n}, {which}: the current count cannot be read ({why})")

    async def _read_scale(self, access: WorkloadAccess) -> ReplicaStatus:
        """The HPA's view from the workload's ``/scale``: ``spec.replicas`` is what it set,
        ``status.replicas`` the pods its controller has (Scale carries no ready count). The whole
        read, retries included, ends within ``request_timeout``, so a silent API falls back in time."""
        api = access.api()
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                scale = await api.scale(access.kind, access.name)
        except TimeoutError:
            raise ExecutorError(f"Kubernetes API at {api.credentials.server}: no answer within "
                                f"{self.settings.request_timeout:g}s (GET {access.label}/scale)") from None
        except ApiError as e:
            raise ExecutorError(access.explain(e, api.namespace)) from None
        # autoscaling/v1 leaves spec.replicas out when it is 0 (omitempty)
        desired = _count((scale.get("spec") or {}).get("replicas"))
        running = _count((scale.get("status") or {}).get("replicas"))
        if desired is None or running is None:
            raise ExecutorError(f"{access.label}/scale in namespace {api.namespace} holds no replica count")
        detail = f"{desired} desired, {running} running: read from {access.label}/scale in namespace {api.namespace} (the HPA's view)"
        asked = self._last_asked()
        if asked is not None and asked != desired:  # the HPA did not carry it out (its tolerance, a bound, a fallback), or not yet
            detail += f"; {asked} last asked of KEDA"
        return ReplicaStatus(desired=desired, running=running, detail=detail)

    def _last_asked(self) -> int | None:
        """The count last asked of KEDA; None before any was (``initial_replicas`` is no request) or
        when its file cannot be read (the API answered: the fallback and ``scale()`` say that)."""
        try:
            return self.asked() if self.path.exists() else None  # scale() keeps each count asked there
        except ExecutorError:
            return None

    async def scale(self, replicas: int) -> ScaleOutcome:
        started = time.monotonic()
        try:
            folder = private_dir(self.path.parent, what="the keda executor's folder")
            write_atomic(folder / self.path.name, json.dumps({"replicas": replicas, "at": time.time()}).encode())
        except (UnsafePath, OSError) as e:
            took = (time.monotonic() - started) * 1000
            return ScaleOutcome(False, f"the count {replicas} could not be kept in {self.path}: {one_line(e)}", took)
        before, self._asked = self._asked, replicas
        took = (time.monotonic() - started) * 1000
        was = "" if before is None or before == replicas else f" (was {before})"
        return ScaleOutcome(
            True, f"{replicas} served to KEDA as this service's metric{was}: the HPA sets the replicas at its next sync, "
                  "nothing is actuated by Docktor", took,
        )


def _namespace_of(scaled_object: str | None) -> str | None:
    return None if scaled_object is None else scaled_object.split("/", 1)[0]


def _count(value: Any) -> int | None:
    """A replica count from the API's JSON: a whole number from 0 up (0 when absent, as the API
    omits zeros); None when it is something else."""
    if value is None:
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
