"""The Docktor plugin SDK: everything a source or an executor plugin imports, and nothing more.

A *source* turns one system (a queue, a metrics server) into named numbers each tick; an
*executor* turns a replica count into running workers. Neither knows anything about rules,
policies or guardrails. Like KEDA's scalers and Nomad Autoscaler's plugins, each is one class:

* its own ``Settings``: a pydantic model of its config block (``kind`` included), validated by
  the config loader, which names the full path of every error (``services[0].queue.stream``);
* ``provides`` (or :meth:`Source.metrics_for` when the settings decide): the metric names it
  produces, each with a unit and a meaning, so ``docktor validate`` can reject a rule on a
  metric nothing produces;
* ``async read()`` (sources) or ``async status()`` / ``async scale(n)`` (executors), and
  ``async close()``.

Plugins are discovered through the entry-point groups ``docktor.sources`` and
``docktor.executors`` (see :mod:`docktor.tools.registry`); a separate package adds one with no
change to Docktor. ``docs/plugins.md`` walks through writing one.

The failure contract (the same for every plugin):

* A metric that cannot be read is *absent* from the returned mapping, never zero: missing data
  must never look like an idle queue. A source that cannot read anything raises
  :class:`SourceError` (after its own retries, within its own timeout).
* ``Executor.status`` raises :class:`ExecutorError` when the backend cannot be asked at all.
* ``Executor.scale`` never raises for a backend failure: it returns a :class:`ScaleOutcome`
  with ``ok=False`` and a one-line message saying why, so the decision log can tell the story.
* Anything else a plugin raises is a bug; the daemon records it as an error on that tick and
  carries on with the other services.
* No message may contain a credential: read secrets from the environment (settings hold the
  variable's *name*) and pass URLs through :func:`redact_url` before showing them.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "STANDARD_METRICS",
    "Context",
    "Executor",
    "ExecutorError",
    "MetricInfo",
    "Metrics",
    "Plugin",
    "PluginSettings",
    "PositiveSeconds",
    "RemovedReplica",
    "ReplicaStatus",
    "ScaleOutcome",
    "Seconds",
    "Source",
    "SourceError",
    "one_line",
    "parse_duration",
    "redact_url",
    "standard",
]

#: Observations are plain ``metric name -> number`` maps. A metric that could not be read is
#: *absent*, never zero.
Metrics = dict[str, float]


# --------------------------------------------------------------------------- errors


class SourceError(Exception):
    """A source could not produce a reading this tick (after its own retries)."""


class ExecutorError(Exception):
    """An executor could not report or change replicas (after its own retries)."""


def one_line(e: BaseException) -> str:
    """``TypeName: first line of the message`` (or the type name alone): one line for a log or a record."""
    if isinstance(e, TimeoutError):
        return "timed out"
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0].strip()}" if lines else type(e).__name__


_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


def redact_url(text: str) -> str:
    """Every ``scheme://user:password@host`` in ``text`` with the user-info replaced by ``***@``."""
    return _USERINFO.sub("***@", text)


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string like ``500ms``, ``10s``, ``5m``, ``1h``; other types pass through."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 500ms, 10s, 5m, 1h)")
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    return value


#: A duration field: ``>= 0`` seconds, written as a number or ``10s``/``5m``/``500ms``.
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
#: A duration that must be ``> 0``.
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricInfo:
    """What one metric means. ``unit`` follows Prometheus base units (``messages``,
    ``messages_per_second``, ``replicas``, ``percent``, ``mebibytes``, ``seconds``, ``ratio``)."""

    unit: str
    help: str


#: The names every queue source should use for the same meaning, so that rules, policies and the
#: LLM advisor work on any of them. A source may produce names of its own too.
STANDARD_METRICS: Mapping[str, MetricInfo] = {
    "queue.pending": MetricInfo("messages", "messages not yet delivered to a worker"),
    "queue.ack_pending": MetricInfo("messages", "messages delivered but not yet acknowledged (in flight)"),
    "queue.backlog": MetricInfo("messages", "pending + ack_pending: all work not yet done"),
    "queue.redelivered": MetricInfo("messages", "messages delivered more than once and still unacknowledged"),
    "queue.waiting": MetricInfo("requests", "pull requests waiting for messages (idle workers asking for work)"),
    "queue.lag": MetricInfo("messages", "messages the consumer has not been handed yet (stream end minus its position)"),
    "queue.rate_in": MetricInfo("messages_per_second", "messages arriving per second"),
    "queue.rate_out": MetricInfo("messages_per_second", "messages completed (acknowledged) per second"),
    "queue.consumers": MetricInfo("consumers", "consumers attached to the queue"),
    "replicas.running": MetricInfo("replicas", "replicas running now (and healthy, where health is known)"),
    "replicas.desired": MetricInfo("replicas", "replicas the executor was last asked for"),
    "replicas.failed": MetricInfo("replicas", "replicas that exited, crashed or are restart-looping"),
    "cpu.avg": MetricInfo("percent", "mean CPU percent over running replicas (100 = one core)"),
    "cpu.max": MetricInfo("percent", "highest CPU percent of any running replica"),
    "mem.avg_mb": MetricInfo("mebibytes", "mean resident memory per running replica"),
    "mem.max_mb": MetricInfo("mebibytes", "highest resident memory of any running replica"),
    "mem.avg_pct": MetricInfo("percent", "mean memory use as percent of the container limit, where one is set"),
}


def standard(*names: str) -> dict[str, MetricInfo]:
    """The :data:`STANDARD_METRICS` entries for ``names``, for a plugin's ``provides``."""
    return {name: STANDARD_METRICS[name] for name in names}


# --------------------------------------------------------------------------- settings and context


class PluginSettings(BaseModel):
    """Base of every plugin's ``Settings``: unknown keys are errors, values are immutable.

    A subclass declares ``kind: Literal["<its kind>"]`` and its own fields. Durations use
    :data:`Seconds` / :data:`PositiveSeconds`; secrets are the *names* of environment variables.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


@dataclass(frozen=True)
class Context:
    """Where a plugin runs: the service it serves and the folders it may use."""

    #: the Docktor service name (``services[].name``)
    service: str
    #: the config file's folder: relative paths in settings are relative to it
    base_dir: Path
    #: a folder the plugin may write to (logs, small files); shared by all plugins of the daemon
    state_dir: Path
    #: names of environment variables that hold Docktor's own credentials (the LLM key, sources'
    #: ``*_env`` settings): an executor never hands them to a replica
    secret_env: frozenset[str] = frozenset()

    def path(self, p: Path) -> Path:
        """``p`` resolved against :attr:`base_dir` when relative."""
        return p if p.is_absolute() else self.base_dir / p


S = TypeVar("S", bound=PluginSettings)


# --------------------------------------------------------------------------- plugins


class Plugin(ABC, Generic[S]):
    """What sources and executors share: a kind, a settings model, the metrics they provide."""

    #: the ``kind:`` (sources) or ``executor:`` name (executors) this plugin serves, e.g. ``"nats"``
    kind: ClassVar[str]
    #: the pydantic model of the plugin's config block
    Settings: ClassVar[type[PluginSettings]]
    #: metrics the plugin produces, whatever its settings; override :meth:`metrics_for` when they decide
    provides: ClassVar[Mapping[str, MetricInfo]] = {}

    def __init__(self, settings: S, context: Context) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def metrics_for(cls, settings: PluginSettings) -> Mapping[str, MetricInfo]:
        """The metrics a plugin with these settings produces (default: :attr:`provides`)."""
        return cls.provides

    @classmethod
    def describe(cls, settings: PluginSettings) -> str:
        """One short line for ``docktor validate``, e.g. ``nats EVENTS/WORKERS``."""
        return cls.kind

    @classmethod
    def check(cls, settings: PluginSettings, context: Context) -> list[str]:
        """Checks worth a warning at ``validate`` (a file missing, say); no network I/O for sources.

        An executor may ask its backend, briefly, when only the backend can tell (a Swarm
        service's mode); it raises :class:`ExecutorError` when the backend *proves* the settings
        can never work, and ``validate`` and ``daemon start`` then refuse the config with that line.
        An unreachable backend is only a warning: the config may be for another machine.
        """
        return []

    async def close(self) -> None:
        """Release connections and resources; called once when the daemon stops."""


class Source(Plugin[S]):
    """Reads one system's metrics. One instance per configured source, kept for the daemon's life.

    ``read`` is called once per tick. Rates are computed from the previous call's counters, so
    the first call may omit them. Implementations apply their own timeouts and retries and raise
    :class:`SourceError` when a reading is impossible.
    """

    #: config keys of older formats that load with a warning (key -> why it is ignored)
    deprecated_keys: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def check_deprecated(cls, key: str, value: object) -> str | None:
        """A problem when a deprecated key's value cannot be honoured (then it is an error, not a warning)."""
        return None

    @abstractmethod
    async def read(self) -> Metrics: ...


# --------------------------------------------------------------------------- executors


@dataclass(frozen=True)
class ReplicaStatus:
    """What an executor knows about a service's replicas right now."""

    desired: int  # the count the executor was last asked for (or found configured)
    running: int  # replicas actually running (and healthy, where health is known)
    failed: int = 0  # replicas that exited, crashed or are restart-looping
    healthy: bool = True  # False when the executor itself is degraded
    detail: str = ""  # human-readable note, e.g. "replica 3 exited with code 1"
    metrics: Metrics = field(default_factory=dict)  # optional per-service metrics (cpu.*, mem.*)


@dataclass(frozen=True)
class RemovedReplica:
    """One replica a scale-in removed: which, why that one, and how it ended."""

    #: the replica as the backend names it: ``"3"`` (local slot), a container or task name
    replica: str
    #: why this replica rather than another, e.g. ``"idlest: 0.2% CPU over the last 10 s"``
    why: str
    #: how it stopped, e.g. ``"exited 0 after SIGTERM in 0.4 s"`` or ``"SIGKILL after 10 s grace"``
    stopped: str

    def as_dict(self) -> dict[str, str]:
        return {"replica": self.replica, "why": self.why, "stopped": self.stopped}


@dataclass(frozen=True)
class ScaleOutcome:
    """Result of asking an executor for N replicas, after it verified the change."""

    ok: bool
    message: str
    duration_ms: float
    running: int | None = None  # replicas running once verification ended
    #: on scale-in, the replicas that were removed (the decision record carries them)
    removed: tuple[RemovedReplica, ...] = ()


class Executor(Plugin[S]):
    """Runs one service's replicas. One instance per service.

    ``scale`` returns only after verifying (or timing out verifying) that the target count runs,
    and reports failure in the outcome rather than raising. ``status`` raises
    :class:`ExecutorError` when the backend cannot be asked at all. The daemon always knows
    ``replicas.running``/``desired``/``failed`` from :class:`ReplicaStatus`; ``provides`` lists
    what an executor adds to ``ReplicaStatus.metrics`` (``cpu.*``, ``mem.*``). ``close`` of an
    in-process executor stops its replicas.
    """

    #: replica counts live inside the daemon process (``decide --once`` cannot keep them)
    in_process: ClassVar[bool] = False

    @classmethod
    def grace_period(cls, settings: PluginSettings) -> float:
        """Longest a replica may take to stop: ``daemon stop`` waits at least this long."""
        return float(getattr(settings, "stop_grace_period", None) or 10.0)

    @abstractmethod
    async def status(self) -> ReplicaStatus: ...

    @abstractmethod
    async def scale(self, replicas: int) -> ScaleOutcome: ...
