"""Plugin discovery: the entry-point groups ``docktor.sources`` and ``docktor.executors``.

Docktor's own plugins are registered in its ``pyproject.toml`` exactly as a separate package
registers its own::

    [project.entry-points."docktor.sources"]
    kafka = "my_package.kafka:KafkaSource"

Only the names are read to list what exists; a plugin's module is imported when a config uses it,
so ``docktor validate`` does not pay for the Docker SDK when no service runs under Compose.

A plugin's kind is declared once, by its settings model (``kind: Literal["kafka"]``); one
installed under an entry-point name that says otherwise is refused, naming both. A process may
add plugins of its own for a while (:func:`installed`): the tests run the daemon on
:mod:`docktor.tools.testing`'s fakes that way, and an embedding program on plugins it ships.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from docktor.tools.sdk import Executor, Source

SOURCES = "docktor.sources"
EXECUTORS = "docktor.executors"

P = TypeVar("P", type[Source[Any]], type[Executor[Any]])


class PluginError(LookupError):
    """No plugin of that kind, or one that cannot be loaded; the message says which exist."""


#: plugins this process added (:func:`installed`), by group and kind; they hide an installed namesake
_added: dict[str, dict[str, type[Any]]] = {SOURCES: {}, EXECUTORS: {}}


@contextlib.contextmanager
def installed(*plugins: type[Source[Any]] | type[Executor[Any]]) -> Iterator[None]:
    """Have ``plugins`` found as if installed while the block runs (by their declared kind)."""
    added: list[tuple[str, str, type[Any] | None]] = []
    try:
        for plugin in plugins:
            group = SOURCES if issubclass(plugin, Source) else EXECUTORS
            added.append((group, plugin.kind, _added[group].get(plugin.kind)))
            _added[group][plugin.kind] = plugin
        yield
    finally:
        for group, kind, before in reversed(added):
            if before is None:
                _added[group].pop(kind, None)
            else:
                _added[group][kind] = before


@functools.cache
def _group(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        # The same distribution may be seen twice (an editable install beside a built one):
        # identical targets are one plugin; different targets under one name are ambiguous.
        if ep.name in found and found[ep.name].value != ep.value:
            raise PluginError(
                f"two {group} plugins are named {ep.name!r}: {found[ep.name].value} and {ep.value}; uninstall one"
            )
        found[ep.name] = ep
    return found


def source_kinds() -> list[str]:
    """Every installed source kind, e.g. ``["nats", "prometheus"]``."""
    return sorted(_group(SOURCES).keys() | _added[SOURCES].keys())


def executor_kinds() -> list[str]:
    """Every installed executor kind, e.g. ``["compose", "local"]``."""
    return sorted(_group(EXECUTORS).keys() | _added[EXECUTORS].keys())


def _load(group: str, kind: str, base: P, what: str) -> P:
    if kind in _added[group]:
        return _added[group][kind]
    eps = _group(group)
    if kind not in eps:
        raise PluginError(f"unknown {what} {kind!r} (installed: {', '.join(sorted(eps)) or 'none'})")
    try:
        plugin = eps[kind].load()
    except Exception as e:  # a broken third-party plugin must not take the CLI down with a traceback
        raise PluginError(f"{what} plugin {kind!r} ({eps[kind].value}) cannot be loaded: {type(e).__name__}: {e}") from None
    if not (isinstance(plugin, type) and issubclass(plugin, base)):
        raise PluginError(f"{what} plugin {kind!r} ({eps[kind].value}) is not a {base.__name__} subclass")
    if plugin.kind != kind:
        raise PluginError(
            f"{what} plugin {kind!r} ({eps[kind].value}) declares kind {plugin.kind!r} in its Settings: "
            f"its entry point must be named {plugin.kind!r}"
        )
    return plugin


def source_plugin(kind: str) -> type[Source[Any]]:
    return _load(SOURCES, kind, Source, "source kind")  # type: ignore[type-abstract]


def executor_plugin(kind: str) -> type[Executor[Any]]:
    return _load(EXECUTORS, kind, Executor, "executor")  # type: ignore[type-abstract]
