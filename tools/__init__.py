"""Metric sources and executors: one file per queue system or backend.

Plugins are found by file name, so adding a queue source is adding one file:

* ``tools/<kind>_source.py`` for ``queue: {kind: <kind>}``. It defines ``Settings`` (a pydantic
  model with ``extra="forbid"`` describing the ``queue:`` block, ``kind`` included) and
  ``create_source(settings) -> MetricSource``.
* ``tools/<name>_executor.py`` for ``executor: <name>``. It defines
  ``create_executor(service, base_dir, state_dir) -> Executor`` (base_dir: the config file's
  folder, for relative paths; state_dir: where the executor may keep logs and files).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).parent


def _plugins(suffix: str) -> list[str]:
    return sorted(
        m.name[: -len(suffix)] for m in pkgutil.iter_modules([str(_HERE)]) if m.name.endswith(suffix)
    )


def source_kinds() -> list[str]:
    """Queue kinds with a source plugin, e.g. ``["nats"]``."""
    return _plugins("_source")


def executor_names() -> list[str]:
    """Executors with a plugin, e.g. ``["compose", "local"]``."""
    return _plugins("_executor")


def source_module(kind: str) -> ModuleType:
    if kind not in source_kinds():
        raise LookupError(f"no source for queue kind {kind!r} (known: {', '.join(source_kinds())})")
    return importlib.import_module(f"tools.{kind}_source")


def executor_module(name: str) -> ModuleType:
    if name not in executor_names():
        raise LookupError(f"no executor {name!r} (known: {', '.join(executor_names())})")
    return importlib.import_module(f"tools.{name}_executor")
