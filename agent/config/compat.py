"""Older config formats, translated into today's before validation (each deprecation warns once).

Every config the Go Docktor accepts loads unchanged:

* its **single-service format** (``service:``, ``compose_file:``, ``scaling: {cpu_high, cpu_low,
  min_replicas, max_replicas, scale_up_by, scale_down_by, check_interval, metrics_window}``,
  ``llm:``) becomes one service under ``policy: rules`` with the rules the Go Docktor derives from
  it: ``cpu.avg > cpu_high`` scales up, ``cpu.avg < cpu_low`` scales down, CPU percent from the
  Compose executor. Keys it leaves out take the Go Docktor's own defaults;
* its **multi-service format** (``services:``) as is: a top-level ``compose_file`` is the default
  compose file of every service that does not choose another executor, ``metrics_window`` is
  ignored (rates come from consecutive ticks), and the metric name ``cpu.avg_pct`` means
  ``cpu.avg``. Source plugins translate their own deprecated keys (``queue.jetstream``,
  ``queue.metrics``) load with a warning through :data:`DEPRECATED_SOURCE_KEYS`.
"""

from __future__ import annotations

from typing import Any

from docktor.agent.problems import Problem

#: service keys that load but mean nothing here
DEPRECATED_SERVICE_KEYS = {
    "metrics_window": "rates come from consecutive ticks; metrics_window is ignored",
}

#: keys of the Go Docktor's ``queue:`` block, per source kind, that load with a warning (key -> why
#: it is ignored); migration is Docktor's concern, not a plugin's
DEPRECATED_SOURCE_KEYS: dict[str, dict[str, str]] = {
    "nats": {
        "jetstream": "this source always reads NATS through JetStream",
        "metrics": "all queue.* metrics are always produced",
    },
}


def deprecated_source_key_problem(kind: str, key: str, value: object) -> str | None:
    """Why a deprecated key's value cannot be honoured (an error, not a warning), or None."""
    if kind == "nats" and key == "jetstream" and value is not True:
        return f"must be true (got {value!r}): this source reads NATS through JetStream only"
    return None


#: metric names of the Go Docktor and what they are called here
METRIC_ALIASES = {
    "cpu.avg_pct": "cpu.avg",
}

#: the Go Docktor's defaults for its single-service format (its DefaultConfig)
GO_SINGLE_SERVICE_DEFAULTS: dict[str, Any] = {
    "service": "web",
    "cpu_high": 75.0,
    "cpu_low": 20.0,
    "min_replicas": 2,
    "max_replicas": 10,
    "scale_up_by": 2,
    "scale_down_by": 1,
    "check_interval": 10,
}
_SCALING_KEYS = ("cpu_high", "cpu_low", "min_replicas", "max_replicas", "scale_up_by", "scale_down_by", "check_interval", "metrics_window")


def translate(raw: dict[str, Any], warnings: list[str], problems: list[Problem]) -> dict[str, Any]:
    """``raw`` in today's format (a new dict; ``raw`` is not changed)."""
    raw = dict(raw)
    if "service" in raw or "scaling" in raw:
        raw = _single_service(raw, warnings, problems)
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
            svc = _rename_metrics(svc, f"services[{i}]", warnings)
            if compose_file is not None:
                svc = _default_compose_file(svc, compose_file)
        out.append(svc)
    return {**raw, "services": out}


def _single_service(raw: dict[str, Any], warnings: list[str], problems: list[Problem]) -> dict[str, Any]:
    """The Go Docktor's ``service:`` + ``scaling:`` form as a one-service ``services:`` list."""
    if "services" in raw:
        problems.append(Problem("service", "give either services: (a list) or the single-service form (service:, scaling:), not both"))
        return raw
    scaling = raw.pop("scaling", None) or {}
    if not isinstance(scaling, dict):
        problems.append(Problem("scaling", f"must be a mapping of cpu_high, cpu_low, min_replicas, ..., got {scaling!r}"))
        return raw
    unknown = sorted(set(scaling) - set(_SCALING_KEYS))
    for key in unknown:
        problems.append(Problem(f"scaling.{key}", f"unknown key (one of: {', '.join(_SCALING_KEYS)})"))
    merged = {**GO_SINGLE_SERVICE_DEFAULTS, "service": raw.pop("service", GO_SINGLE_SERVICE_DEFAULTS["service"]), **scaling}
    if "metrics_window" in merged:
        merged.pop("metrics_window")
        warnings.append(f"scaling.metrics_window: deprecated, {DEPRECATED_SERVICE_KEYS['metrics_window']}")
    service = {
        "name": merged["service"],
        "policy": "rules",
        "min_replicas": merged["min_replicas"],
        "max_replicas": merged["max_replicas"],
        "scale_up_by": merged["scale_up_by"],
        "scale_down_by": merged["scale_down_by"],
        "check_interval": merged["check_interval"],
        "rules": {
            "scale_up_when": [{"metric": "cpu.avg", "op": ">", "value": merged["cpu_high"]}],
            "scale_down_when": [{"metric": "cpu.avg", "op": "<", "value": merged["cpu_low"]}],
        },
    }
    warnings.append(
        "service/scaling: the Go Docktor's single-service format, read as services[0] "
        f"({service['name']!r}: cpu.avg > {merged['cpu_high']:g} scales up, cpu.avg < {merged['cpu_low']:g} scales down)"
    )
    return {**raw, "services": [service]}


def _rename_metrics(svc: dict[str, Any], at: str, warnings: list[str]) -> dict[str, Any]:
    rules = svc.get("rules")
    if not isinstance(rules, dict):
        return svc
    rules = dict(rules)
    for group in ("scale_up_when", "scale_down_when"):
        items = rules.get(group)
        if not isinstance(items, list):
            continue
        renamed = []
        for j, rule in enumerate(items):
            if isinstance(rule, dict) and rule.get("metric") in METRIC_ALIASES:
                new = METRIC_ALIASES[rule["metric"]]
                warnings.append(f"{at}.rules.{group}[{j}].metric: {rule['metric']!r} is deprecated, read as {new!r}")
                rule = {**rule, "metric": new}
            renamed.append(rule)
        rules[group] = renamed
    return {**svc, "rules": rules}


def _default_compose_file(svc: dict[str, Any], compose_file: Any) -> dict[str, Any]:
    executor = svc.get("executor")
    if executor is None or executor == "compose":
        svc.setdefault("compose_file", compose_file)
    elif isinstance(executor, dict) and executor.get("kind") == "compose":
        svc["executor"] = {"compose_file": compose_file, **executor}
    return svc
