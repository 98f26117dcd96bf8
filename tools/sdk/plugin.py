"""The plugin classes: :class:`Source` and :class:`Executor`, and what an executor reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

from docktor.tools.sdk.metric_info import MetricInfo, Metrics
from docktor.tools.sdk.settings import Context, PluginSettings, TlsSettings

S = TypeVar("S", bound=PluginSettings)


def settings_kind(settings: type[PluginSettings]) -> str | None:
    """The one value a settings model's ``kind: Literal["..."]`` admits, None when it admits any."""
    field = settings.model_fields.get("kind")
    annotation = None if field is None else field.annotation
    if get_origin(annotation) is Literal and len(get_args(annotation)) == 1 and isinstance(get_args(annotation)[0], str):
        return str(get_args(annotation)[0])
    return None


class Plugin(ABC, Generic[S]):
    """What sources and executors share: a kind, a settings model, the metrics they provide.

    A plugin is generic over its settings model (``class NatsSource(Source[NatsSettings])``), so
    every hook receives the plugin's own settings type. Its kind is declared once, by the model's
    ``kind: Literal["nats"]``: :attr:`kind` is read from there, and the registry refuses a plugin
    installed under another entry-point name.
    """

    #: the ``kind:`` (sources) or ``executor:`` name (executors) this plugin serves, e.g. ``"nats"``;
    #: taken from :attr:`Settings`' ``kind`` Literal
    kind: ClassVar[str]
    #: the pydantic model of the plugin's config block
    Settings: ClassVar[type[PluginSettings]]
    #: metrics the plugin produces, whatever its settings; override :meth:`metrics_for` when they decide
    provides: ClassVar[Mapping[str, MetricInfo]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = cls.__dict__.get("Settings")
        if model is None:
            return  # an abstract base (Source, Executor) or a subclass keeping its parent's model
        declared = settings_kind(model)
        if declared is None:
            raise TypeError(f"{cls.__name__}.Settings must declare its kind as kind: Literal[\"<name>\"]")
        if "kind" in cls.__dict__ and cls.__dict__["kind"] != declared:
            raise TypeError(f"{cls.__name__}.kind is {cls.__dict__['kind']!r} but its Settings say {declared!r}: declare it once, in Settings")
        cls.kind = declared

    def __init__(self, settings: S, context: Context) -> None:
        self.settings = settings
        self.context = context

    @classmethod
    def metrics_for(cls, settings: S) -> Mapping[str, MetricInfo]:
        """The metrics a plugin with these settings produces (default: :attr:`provides`)."""
        return cls.provides

    @classmethod
    def describe(cls, settings: S) -> str:
        """One short line for ``docktor validate``, e.g. ``nats EVENTS/WORKERS``; it must hold no secret."""
        return cls.kind

    @classmethod
    def check(cls, settings: S, context: Context) -> list[str]:
        """Offline checks for ``validate``; no network I/O for sources.

        A line that proves the settings cannot work on this machine (a file they name does not
        exist, a program that is not installed) is an :class:`Unworkable`: ``validate`` exits 2 on
        it. A plain ``str`` is a warning, for what may be right elsewhere (no Compose CLI here).

        An executor may ask its backend, briefly, when only the backend can tell (a Swarm
        service's mode); it raises :class:`ExecutorError` when the backend *proves* the settings
        can never work, and ``validate`` and ``daemon start`` then refuse the config with that line.
        An unreachable backend is only a warning: the config may be for another machine.

        The default: one :class:`Unworkable` per file of the settings' ``tls:`` block that does not exist.
        """
        tls = getattr(settings, "tls", None)
        return tls.missing(context) if isinstance(tls, TlsSettings) else []

    async def close(self) -> None:
        """Release connections and resources; called once when the daemon stops."""


class Source(Plugin[S]):
    """Reads one system's metrics. One instance per configured source, kept for the daemon's life.

    ``read`` is called once per tick. Rates are computed from the previous call's counters, so
    the first call may omit them. Implementations apply their own timeouts and retries and raise
    :class:`SourceError` when a reading is impossible.
    """

    @abstractmethod
    async def read(self) -> Metrics: ...

    # Optional: rate baselines that survive a daemon restart. A source that computes rates from
    # the previous read's counters loses them when the daemon restarts, and its first read after
    # a restart has no rates. With these two, the daemon saves the counters in its state file
    # after every tick and hands them back at the next start, so time spent down is one interval.

    def snapshot(self) -> dict[str, Any] | None:
        """What to keep across a restart (the previous read's counters), as JSON-serialisable data.

        Called after each tick. Times go in as *ages* on the plugin's own clock (``"age_s":
        clock() - taken_at``): the daemon adds the wall-clock time that passed until
        :meth:`restore`. None (the default): nothing to keep.
        """
        return None

    def restore(self, data: Mapping[str, Any], elapsed: float) -> bool:
        """Take back what :meth:`snapshot` returned, ``elapsed`` wall-clock seconds later.

        Called at most once, before the first :meth:`read`, and only while the source's settings
        are the ones that produced ``data`` (the daemon drops a snapshot whose source changed and
        one older than a few check intervals). Return False (or raise ``ValueError``/``KeyError``/
        ``TypeError``) to refuse data that does not fit; the daemon then logs it and starts
        without a baseline, as on a first start.
        """
        return False


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
    #: the executor hands the count to another controller, which acts on it later (``keda``: the
    #: HPA sets the replicas): ``scale`` records the count and verifies nothing, so its outcome's
    #: ``running`` is None and it names no removed replica (that controller chooses them)
    delegates: ClassVar[bool] = False

    @classmethod
    def grace_period(cls, settings: S) -> float:
        """Longest a replica may take to stop: ``daemon stop`` waits at least this long."""
        return float(getattr(settings, "stop_grace_period", None) or 10.0)

    @abstractmethod
    async def status(self) -> ReplicaStatus: ...

    @abstractmethod
    async def scale(self, replicas: int) -> ScaleOutcome: ...

    # Optional: what makes a restarted or second daemon safe.

    def target(self) -> str | None:
        """What this executor scales, named the same from every config that scales it (e.g.
        ``<engine>/<project>/<service>``; the daemon adds the executor's kind, so two executors'
        names never collide).

        Two daemons (or a daemon and ``decide --once``) never act on the same target at once: the
        second is refused, naming the first. None (the default): no check beyond the config's own
        lock (an in-process executor needs none: its replicas belong to the daemon).
        """
        return None

    async def last_scaled(self) -> LastScale | None:
        """When the backend last changed the replica count, where it knows (Compose: the newest
        container's creation time; Swarm: the service's ``UpdatedAt``).

        Read once when the daemon starts: its cooldowns then count from this too, like Nomad
        Autoscaler reading the target's last scaling event, so a scale made by a daemon that
        died before saving its state (or by hand) is not followed by another one too soon.
        Bounded by the check interval; None (the default) or a failure: unknown.
        """
        return None


@dataclass(frozen=True)
class LastScale:
    """A backend's own record of its last replica change (:meth:`Executor.last_scaled`)."""

    #: wall-clock time, seconds since the epoch
    at: float
    #: ``up``, ``down``, or None when the backend cannot tell (then it counts as both)
    direction: Literal["up", "down"] | None = None
