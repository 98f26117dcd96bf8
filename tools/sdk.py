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

import os
import re
import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "STANDARD_METRICS",
    "Context",
    "EnvName",
    "Executor",
    "ExecutorError",
    "LastScale",
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
    "TlsSettings",
    "env_secret",
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
    """One line for a log or a record: the first line of the message, after the type's name unless
    the error is a :class:`SourceError`/:class:`ExecutorError` (written for the user already)."""
    if isinstance(e, TimeoutError):
        return "timed out"
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return lines[0] if isinstance(e, SourceError | ExecutorError) else f"{type(e).__name__}: {lines[0]}"


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
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, allow_inf_nan=False)]
#: A duration that must be ``> 0``.
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, allow_inf_nan=False)]


# --------------------------------------------------------------------------- secrets

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        # the value is not echoed: someone may have pasted the secret itself here
        raise ValueError("must be the name of an environment variable (the secret itself goes in the environment)")
    return value


#: A setting that names an environment variable holding a secret (``password_env: RABBIT_PASSWORD``).
EnvName = Annotated[str, AfterValidator(_check_env_name)]


def env_secret(name: str, setting: str) -> str:
    """The value of environment variable ``name``; :class:`SourceError` naming it (never a value) when unset."""
    value = os.environ.get(name)
    if value is None:
        raise SourceError(f"environment variable {name} ({setting}) is not set")
    return value


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


#: the type of a settings error whose input may be a secret: never shown back to the user
SECRET_ERROR = "secret_value"


class PluginSettings(BaseModel):
    """Base of every plugin's ``Settings``: unknown keys are errors, values are immutable.

    A subclass declares ``kind: Literal["<its kind>"]`` and its own fields. Durations use
    :data:`Seconds` / :data:`PositiveSeconds`; secrets are the *names* of environment variables.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_secret_in_errors(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse a secret where a setting names one, before the field's own validation, with an
        error located at the field. A ``*_env`` value that is not a variable name may be the secret
        itself: its error is of type :data:`SECRET_ERROR`, which the config loader never echoes.
        A URL's user-info is refused too (the loader shows URLs with it scrubbed)."""
        key = info.field_name or ""
        if isinstance(value, str):
            if key.endswith("_env") and not _ENV_NAME.match(value):
                raise PydanticCustomError(
                    SECRET_ERROR, "must be the name of an environment variable (the secret itself goes in the environment)"
                )
            if (key == "url" or key.endswith("_url")) and _USERINFO.search(value):
                raise ValueError("no credentials in the URL; name environment variables in the *_env settings instead")
        return value


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


class TlsSettings(BaseModel):
    """A plugin's ``tls:`` block: trust a private CA and/or present a client certificate.

    ``ca_file`` replaces the system's trust store (a self-signed or private-CA server is trusted
    without environment tricks); ``cert_file`` + ``key_file`` are the client certificate for
    servers that require one (mutual TLS). Relative paths are relative to the config file.
    Certificates are always verified, host names included: there is no switch to turn that off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def files(self) -> dict[str, Path]:
        """The files named, by setting (``ca_file`` -> path)."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {k: v for k, v in named.items() if v is not None}

    def missing(self, context: Context) -> list[str]:
        """One line per named file that does not exist (for a plugin's offline ``check``)."""
        return [f"tls.{k}: {context.path(p)} does not exist" for k, p in self.files().items() if not context.path(p).is_file()]

    def ssl_context(self, context: Context) -> ssl.SSLContext:
        """A client-side context that verifies the server (against ``ca_file`` when given).

        Raises :class:`SourceError` naming the setting and file when one cannot be loaded.
        """
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        for key, path in self.files().items():
            if not context.path(path).is_file():
                raise SourceError(f"tls.{key}: {context.path(path)} does not exist")
        try:
            if self.ca_file is not None:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(context.path(self.ca_file)))
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(context.path(self.cert_file)), str(context.path(self.key_file)))
        except (ssl.SSLError, OSError, ValueError) as e:
            raise SourceError(f"tls: cannot load {', '.join(map(str, self.files().values()))}: {one_line(e)}") from None
        return ctx


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

    @classmethod
    def grace_period(cls, settings: PluginSettings) -> float:
        """Longest a replica may take to stop: ``daemon stop`` waits at least this long."""
        return float(getattr(settings, "stop_grace_period", None) or 10.0)

    @abstractmethod
    async def status(self) -> ReplicaStatus: ...

    @abstractmethod
    async def scale(self, replicas: int) -> ScaleOutcome: ...

    # Optional: what makes a restarted or second daemon safe.

    def target(self) -> str | None:
        """What this executor scales, named the same from every config that scales it (e.g.
        ``compose:<engine>/<project>/<service>``).

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
