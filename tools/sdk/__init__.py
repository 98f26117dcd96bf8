"""The Docktor plugin SDK: everything a source or an executor plugin imports, and nothing more.

A *source* turns one system (a queue, a metrics server) into named numbers each tick; an
*executor* turns a replica count into running workers. Neither knows anything about rules,
policies or guardrails. Like KEDA's scalers and Nomad Autoscaler's plugins, each is one class:

* its own ``Settings``: a pydantic model of its config block (``kind`` included), validated by
  the config loader, which names the full path of every error (``services[0].queue.stream``);
* ``provides`` (or :meth:`Source.metrics_for` when the settings decide): the metric names it
  produces, each with a unit and a meaning, so ``docktor validate`` can reject a rule on a
  metric nothing produces; a value outside its metric's domain (negative, NaN) is treated as
  missing by the daemon (:func:`admit`);
* ``async read()`` (sources) or ``async status()`` / ``async scale(n)`` (executors), and
  ``async close()``.

Plugins are discovered through the entry-point groups ``docktor.sources`` and
``docktor.executors`` (see :mod:`docktor.tools.registry`); a separate package adds one with no
change to Docktor. ``docs/plugins.md`` walks through writing one, and
:mod:`docktor.tools.testing` holds in-memory fakes and the contract suite every plugin passes.

The modules: :mod:`.errors` (errors and one-line texts), :mod:`.settings` (the settings base,
durations, secrets, ``tls:``), :mod:`.urls` (the check of a URL setting), :mod:`.metric_info`
(units, the standard names, the domain a value must be in), :mod:`.plugin` (the plugin classes),
:mod:`.retry` (attempts within a deadline, transient or permanent failures), :mod:`.rates` (rates
from cumulative counters, across restarts), :mod:`.http_client` (an HTTP client that trusts only
what the settings say), :mod:`.files` (private files, no links followed), :mod:`.ages` (``queue.oldest_age`` from a broker's
message time, an impossible time missing with the reason).
Everything a plugin needs is importable from ``docktor.tools.sdk`` itself.

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

from docktor.tools.sdk.ages import CLOCK_SKEW, age_since, rfc3339_epoch
from docktor.tools.sdk.errors import ExecutorError, SourceError, Unworkable, one_line, reason, redact_url, scrub
from docktor.tools.sdk.files import UnsafePath, open_private, private_dir, read_private, readable_by_others, write_atomic
from docktor.tools.sdk.http_client import http_client, transport_errors
from docktor.tools.sdk.metric_info import STANDARD_METRICS, MetricInfo, Metrics, Missing, admit, standard
from docktor.tools.sdk.plugin import (
    Executor,
    LastScale,
    Plugin,
    RemovedReplica,
    ReplicaStatus,
    ScaleOutcome,
    Source,
    settings_kind,
)
from docktor.tools.sdk.rates import Counters, RateTracker
from docktor.tools.sdk.retry import Permanent, Transient, Unavailable, retrying
from docktor.tools.sdk.settings import (
    SECRET_ERROR,
    Context,
    EnvName,
    PluginSettings,
    PositiveSeconds,
    Seconds,
    TlsSettings,
    env_secret,
    go_together,
    parse_duration,
)
from docktor.tools.sdk.urls import check_url, url_setting

__all__ = [
    "CLOCK_SKEW",
    "SECRET_ERROR",
    "STANDARD_METRICS",
    "Context",
    "Counters",
    "EnvName",
    "Executor",
    "ExecutorError",
    "LastScale",
    "MetricInfo",
    "Metrics",
    "Missing",
    "Permanent",
    "Plugin",
    "PluginSettings",
    "PositiveSeconds",
    "RateTracker",
    "RemovedReplica",
    "ReplicaStatus",
    "ScaleOutcome",
    "Seconds",
    "Source",
    "SourceError",
    "TlsSettings",
    "Transient",
    "Unavailable",
    "UnsafePath",
    "Unworkable",
    "admit",
    "age_since",
    "check_url",
    "env_secret",
    "go_together",
    "http_client",
    "one_line",
    "open_private",
    "parse_duration",
    "private_dir",
    "read_private",
    "readable_by_others",
    "reason",
    "redact_url",
    "retrying",
    "rfc3339_epoch",
    "scrub",
    "settings_kind",
    "standard",
    "transport_errors",
    "url_setting",
    "write_atomic",
]
