"""``executor: keda``: Docktor decides, KEDA and the Kubernetes HPA act.

The service's pods run on Kubernetes under a KEDA ScaledObject whose ``external`` trigger asks
``docktor keda`` (``agent/keda/``) for a metric: the replica count Docktor decided. So this
executor has nothing to actuate. ``scale(n)`` records ``n`` as the count KEDA is to be told (and
says so in its outcome); the HPA sets the Deployment's replicas at its next sync. ``status()``
reports the count last asked for: the metric request carries no replica count, and until a
later change reads the target's ``/scale`` subresource where the API is reachable, the count
Docktor asked for is the count it knows (``docs/keda.md``, "How Docktor learns the current count").

The count asked for is kept in ``<state_dir>/keda/<service>.json`` (``0600``, written whole), so
a restarted ``docktor keda`` answers KEDA with the count it had, not with ``initial_replicas``.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import Field

from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    PluginSettings,
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


class KedaSettings(PluginSettings):
    """``executor: keda``: the count is served to KEDA by ``docktor keda``; nothing is actuated here."""

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

    @classmethod
    def describe(cls, settings: KedaSettings) -> str:
        return f"keda {settings.scaled_object}" if settings.scaled_object else "keda (the count served by docktor keda)"

    def target(self) -> str | None:
        return None if self.settings.scaled_object is None else f"keda:{self.settings.scaled_object}"

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
        n = self.asked()
        # running = the count asked for: the pods the HPA runs are not read (docs/keda.md)
        return ReplicaStatus(desired=n, running=n, detail=f"{n} asked of KEDA (the pods the HPA runs are not read)")

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

