"""What the contract suite runs on: a plugin, and the peers a test gives it (:class:`SourcePeer`,
:class:`ExecutorPeer`); and the pieces every check shares (bounds, the verdicts, one run's tools)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from docktor.tools.sdk import Context, Executor, MetricInfo, Plugin, PluginSettings, Source, admit

T = TypeVar("T")

#: what every bound adds to the timeout a plugin's settings give: this runs on busy machines
SLACK_S = 5.0
#: the bound of one read when neither the settings nor the peer name a timeout
DEFAULT_READ_BOUND_S = 30.0


#: one rule of the contract: an async function of one :class:`Run`
Check = Callable[["Run"], Awaitable[None]]


def by_name(*checks: Check) -> dict[str, Check]:
    """The checks of a suite by name (the name shows in each test's id), in order."""
    return {check.__name__: check for check in checks}


class Violation(AssertionError):
    """The plugin broke the contract; the message says which rule and what it did instead."""


class NotApplicable(Exception):
    """The case gives nothing this check can run on (say why: pytest shows it as a skip)."""


@dataclass(frozen=True)
class Case:
    """One plugin under the contract: the plugin class, and the name of the pytest fixture that
    gives its peer (a :class:`SourcePeer` or :class:`ExecutorPeer`; module-scoped ones are shared)."""

    plugin: type[Plugin[Any]]
    #: the fixture giving this case's peer (pytest's own way of naming fixtures, as in ``indirect=``)
    peer: str
    #: the test id (default: the plugin's kind)
    id: str | None = None
    #: check -> why this plugin is known to fail it: the check then runs as a strict xfail, so it
    #: turns red the day the plugin is fixed and the entry must go
    xfail: Mapping[str, str] = field(default_factory=dict)
    #: pytest marks for every check of this case (``pytest.mark.docker``)
    marks: Sequence[Any] = ()

    @property
    def name(self) -> str:
        return self.id or self.plugin.kind


@dataclass(frozen=True)
class SourcePeer:
    """The peers a source is checked against, each given as its settings (a config block)."""

    #: settings of a source whose peer is up and holds known figures
    healthy: Mapping[str, Any]
    #: metrics the healthy source must read exactly, e.g. ``{"queue.backlog": 5}``
    expect: Mapping[str, float]
    #: settings naming a peer that is not there (a closed port, an unknown host)
    unreachable: Mapping[str, Any]
    #: settings of peers that answer garbage (see :mod:`docktor.tools.testing.standins`)
    garbage: Sequence[Mapping[str, Any]] = ()
    #: settings of a peer that accepts connections and never answers
    silent: Mapping[str, Any] | None = None
    #: declared metrics the healthy source cannot have on its first read (rates without a
    #: baseline, a query that matches nothing): absent, never zero
    missing: Collection[str] = ()
    #: settings merged into ``healthy`` and ``unreachable`` that name secrets (``password_env``):
    #: the check sets those variables to canaries and looks for them everywhere
    secrets: Mapping[str, Any] = field(default_factory=dict)
    #: metrics a restored source must read on its first read (default: what the baseline buys,
    #: i.e. the metrics a source's second read has and its first lacks)
    rates: Collection[str] | None = None
    #: the read's own timeout, when the settings have no ``timeout``
    timeout: float | None = None
    context: Context | None = None


@dataclass(frozen=True)
class ExecutorPeer:
    """The backend an executor is checked against, and how to break it."""

    #: settings of an executor whose backend is up
    settings: Mapping[str, Any]
    context: Context
    #: scale up to the first count, then in to the second (which must be lower)
    scale: tuple[int, int] = (2, 1)
    #: settings whose ``scale(1)`` the backend cannot carry out (an image that does not exist, a
    #: command that exits at once): a failed outcome, never a raise
    failing: Mapping[str, Any] | None = None
    #: settings (and environment) under which the backend cannot be asked at all
    unreachable: Mapping[str, Any] | None = None
    unreachable_env: Mapping[str, str] = field(default_factory=dict)
    #: longest one scale may take (default: the settings' ``scale_timeout``, else 30 s, plus the grace period)
    timeout: float | None = None


@dataclass
class Run:
    """One check's tools: the case, where to write, the environment, and what was logged."""

    plugin: Any
    peer: Any
    tmp: Path
    setenv: Callable[[str, str], None]
    #: everything logged since the check began, formatted (tracebacks included)
    logs: Callable[[], str]

    def context(self) -> Context:
        given = getattr(self.peer, "context", None)
        if given is not None:
            return given  # type: ignore[no-any-return]
        state = self.tmp / "state"
        state.mkdir(parents=True, exist_ok=True)
        return Context(service="contract", base_dir=self.tmp, state_dir=state)

    def settings(self, block: Mapping[str, Any]) -> PluginSettings:
        try:
            return self.plugin.Settings.model_validate(dict(block))  # type: ignore[no-any-return]
        except ValidationError as e:
            raise Violation(f"the case's settings do not validate (a mistake in the case?): {e}") from None

    def source(self, block: Mapping[str, Any]) -> Source[Any]:
        return self.plugin(self.settings(block), self.context())  # type: ignore[no-any-return]

    def executor(self, block: Mapping[str, Any], context: Context | None = None) -> Executor[Any]:
        return self.plugin(self.settings(block), context or self.context())  # type: ignore[no-any-return]


async def within(seconds: float, what: str, call: Awaitable[T]) -> T:
    """``await call``, a :class:`Violation` naming ``what`` when it outlasts ``seconds``."""
    try:
        async with asyncio.timeout(seconds) as scope:
            return await call
    except TimeoutError:
        if scope.expired():
            raise Violation(f"{what} did not return within {seconds:g} s") from None
        raise


def texts_of(error: BaseException) -> list[str]:
    """What a log or a record may show of ``error``: its text, its repr, and those of its causes."""
    out: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(out) < 20:
        out += [str(seen), repr(seen)]
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return out


def check_domain(reading: Any, infos: Mapping[str, MetricInfo], what: str) -> None:
    """Every metric read is declared, and a value its metric can mean (:func:`admit` refuses nothing)."""
    if not isinstance(reading, Mapping):
        raise Violation(f"{what} returned {type(reading).__name__}, not a mapping of metric names to numbers")
    undeclared = sorted(set(reading) - set(infos))
    if undeclared:
        raise Violation(f"{what} returned metrics its metrics_for(settings) does not declare: {', '.join(undeclared)}")
    _, refused = admit(reading, infos)
    if refused:
        raise Violation(f"{what} returned values outside their metric's domain: " + "; ".join(f"{k}: {v}" for k, v in refused.items()))


def plausible_epoch(at: float) -> bool:
    """A wall-clock time a backend could mean: since 2000, and not in the future (a minute of skew allowed)."""
    return math.isfinite(at) and 946_684_800 <= at <= time.time() + 60
