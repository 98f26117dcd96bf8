"""Older config formats, translated into today's before validation (each deprecation warns once).

The Go Docktor's multi-service format loads unchanged: a top-level ``compose_file`` is the
default compose file of every service that does not choose another executor, and
``metrics_window`` is ignored (rates come from consecutive ticks). Source plugins translate their
own deprecated keys (``queue.jetstream``, ``queue.metrics``) through ``deprecated_keys``.
"""

from __future__ import annotations

from typing import Any

from docktor.agent.errors import Problem

#: service keys that load but mean nothing here
DEPRECATED_SERVICE_KEYS = {
    "metrics_window": "rates come from consecutive ticks; metrics_window is ignored",
}


def translate(raw: dict[str, Any], warnings: list[str], problems: list[Problem]) -> dict[str, Any]:
    """``raw`` in today's format (a new dict; ``raw`` is not changed)."""
    raw = dict(raw)
    compose_file = raw.pop("compose_file", None)
    services = raw.get("services")
    if not isinstance(services, list):
        return raw
    out = []
    for i, svc in enumerate(services):
        if isinstance(svc, dict):
            svc = dict(svc)
            for key, why in DEPRECATED_SERVICE_KEYS.items():
                if key in svc:
                    svc.pop(key)
                    warnings.append(f"services[{i}].{key}: deprecated, {why}")
            if compose_file is not None:
                svc = _default_compose_file(svc, compose_file)
        out.append(svc)
    return {**raw, "services": out}


def _default_compose_file(svc: dict[str, Any], compose_file: Any) -> dict[str, Any]:
    executor = svc.get("executor")
    if executor is None or executor == "compose":
        svc.setdefault("compose_file", compose_file)
    elif isinstance(executor, dict) and executor.get("kind") == "compose":
        svc["executor"] = {"compose_file": compose_file, **executor}
    return svc
