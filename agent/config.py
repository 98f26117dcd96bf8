"""``docktor.yaml``: pydantic models for the whole file, and a loader whose every error names a path.

The loader never raises anything but :class:`~agent.errors.UsageError`, whatever the input, so
the CLI can print one line per problem and exit with 2.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from agent.errors import Problem, UsageError
from agent.metrics import KNOWN_METRICS

# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string like ``500ms``, ``10s``, ``5m``, ``1h``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 500ms, 10s, 5m, 1h)")
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _split_command(value: Any) -> Any:
    return shlex.split(value) if isinstance(value, str) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- rules

Op = Literal[">", ">=", "<", "<=", "==", "!="]


class Rule(Strict):
    metric: str
    op: Op
    value: float

    def text(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Rules(Strict):
    #: scale up when ANY of these matches
    scale_up_when: list[Rule] = Field(default_factory=list)
    #: scale down when ALL of these match (and only if the list is non-empty)
    scale_down_when: list[Rule] = Field(default_factory=list)


# --------------------------------------------------------------------------- llm

Provider = Literal["dmr", "ollama", "openai", "openai-compatible", "none"]


class LLMConfig(Strict):
    """The LLM advisor. ``provider: none`` (the default) means rules and policy only."""

    provider: Provider = "none"
    base_url: str | None = None
    model: str | None = None
    #: name of the environment variable holding the API key; the key itself never goes in the file
    api_key_env: str | None = None
    timeout: PositiveSeconds = 10.0
    max_tokens: int = Field(default=512, ge=16)
    temperature: float = Field(default=0.0, ge=0, le=2)
    #: the LLM may move replicas even when no rule fired (still inside step limits and bounds)
    may_act_without_rules: bool = False
    #: tool-calling rounds allowed per decision
    max_tool_rounds: int = Field(default=2, ge=0, le=8)
    #: ask again when an observation moved by more than this fraction since the last call
    ask_on_change: float = Field(default=0.2, ge=0)
    #: ask at least this often even when nothing changed
    heartbeat: PositiveSeconds = 300.0
    #: tools offered to the model (default: all); fewer tools make a shorter prompt for small contexts
    tools: list[Literal["get_queue_metrics", "get_service_status", "get_recent_decisions", "get_metric_history"]] | None = None


# --------------------------------------------------------------------------- services

Policy = Literal["rules", "target", "docktor"]

#: Guardrail defaults per policy, applied to keys the service leaves unset. Threshold rules move
#: by small fixed steps with cooldowns (the Go Docktor's +2/-1). Sizing policies compute the count
#: they need, so they may follow it like HPA's default behavior: up by the larger of 4 replicas
#: and 100 % per tick, down by at most half, after a 60 s stabilization window and 30 s cooldown.
_SIZING_DEFAULTS: dict[str, Any] = {
    "scale_up_by": 4, "scale_up_percent": 100, "scale_down_by": 1, "scale_down_percent": 50,
    "cooldown_up": 0, "cooldown_down": 30, "scale_down_stabilization": 60,
}
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "rules": {"scale_up_by": 2, "scale_down_by": 1, "cooldown_up": 15, "cooldown_down": 60, "scale_down_stabilization": 60},
    "target": _SIZING_DEFAULTS,
    "docktor": _SIZING_DEFAULTS,
}


class ServiceConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    #: ``local`` (child processes) or ``compose``; default: compose when a compose_file is set
    executor: str | None = None

    # local executor
    command: Annotated[list[str] | None, BeforeValidator(_split_command)] = None
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: Path | None = None
    stop_grace_period: Seconds = 10.0

    # compose executor
    compose_file: Path | None = None
    project: str | None = None
    #: the Compose service to scale; default: ``name``
    compose_service: str | None = None
    #: how long to wait for scaled replicas to run (and be healthy) before calling it an error
    scale_timeout: PositiveSeconds = 60.0

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    check_interval: PositiveSeconds = 10.0

    queue: dict[str, Any] | None = None
    rules: Rules = Field(default_factory=Rules)

    policy: Policy = "docktor"
    #: latency target: seconds a message may wait in the queue (docktor policy)
    target_wait: PositiveSeconds = 30.0
    #: backlog per replica to aim for (target policy, like KEDA's lagThreshold)
    target_per_replica: float | None = Field(default=None, gt=0)
    #: processing time per message, used before throughput has been measured
    processing_time: PositiveSeconds | None = None
    #: seconds a new replica needs before it takes work
    startup_delay: Seconds = 5.0
    #: docktor policy: how a periodic prediction is used. ``floor``: it may only raise the target
    #: (never lower it); ``forecast``: when it fit the recent past it replaces the current rate,
    #: so a recurring burst is expected to end (cheaper, but trusts the pattern)
    prediction: Literal["floor", "forecast"] = "floor"

    # Step limits and cooldowns. Unset ones take the defaults of the service's policy
    # (POLICY_DEFAULTS): threshold rules step slowly, sizing policies may jump like HPA does.
    scale_up_by: int = Field(default=2, ge=1)
    scale_down_by: int = Field(default=1, ge=1)
    #: optional percent steps; the larger of replicas and percent wins (HPA selectPolicy: Max)
    scale_up_percent: float | None = Field(default=None, gt=0)
    scale_down_percent: float | None = Field(default=None, gt=0, le=100)
    cooldown_up: Seconds = 15.0
    cooldown_down: Seconds = 60.0
    #: scale down only to the highest recommendation of this trailing window (HPA stabilization)
    scale_down_stabilization: Seconds = 60.0

    @model_validator(mode="before")
    @classmethod
    def _policy_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            policy = data.get("policy", cls.model_fields["policy"].default)
            for key, value in (POLICY_DEFAULTS.get(policy, {}) if isinstance(policy, str) else {}).items():
                data.setdefault(key, value)
        return data

    # Parsed from ``queue`` by the source plugin named by ``queue.kind``; set by the loader.
    queue_settings: Any = Field(default=None, exclude=True, repr=False)

    @property
    def target_service(self) -> str:
        return self.compose_service or self.name

    def rule_metrics(self) -> set[str]:
        return {r.metric for r in self.rules.scale_up_when + self.rules.scale_down_when}


class LogConfig(Strict):
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    backups: int = Field(default=5, ge=0)


class DocktorConfig(Strict):
    version: str | int | None = None
    mode: Literal["autonomous", "advisory"] = "autonomous"
    state_dir: Path | None = None
    compose_file: Path | None = None  # default for every compose service (Go Docktor layout)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    services: list[ServiceConfig] = Field(min_length=1)

    # Filled in by the loader.
    path: Path | None = Field(default=None, exclude=True)
    warnings: tuple[str, ...] = Field(default=(), exclude=True)

    @property
    def base_dir(self) -> Path:
        return (self.path.parent if self.path else Path.cwd()).resolve()

    def service(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)


# Go Docktor keys that load but mean nothing here; each warns once.
DEPRECATED_SERVICE_KEYS = {
    "metrics_window": "rates come from consecutive ticks; metrics_window is ignored",
}

# --------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(node: Any, env: dict[str, str], path: str, problems: list[Problem]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, _join(path, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and ":-" in m.group(0)):
            if default is None:
                problems.append(Problem(path, f"environment variable {name} is not set"))
                return ""
            return default
        return value

    return _VAR.sub(sub, node)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> DocktorConfig:
    """Load, interpolate and validate a config file. Raises only :class:`UsageError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError([Problem(str(p), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError([Problem(str(p), f"cannot read: {e}")]) from None
    return parse_config(text, p, env)


def parse_config(text: str, path: Path | None = None, env: dict[str, str] | None = None) -> DocktorConfig:
    where = str(path) if path else "<config>"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError([Problem(where, f"not valid YAML{at}: {problem}")]) from None
    if not isinstance(raw, dict):
        raise UsageError([Problem(where, "must be a YAML mapping with a 'services' list")])

    problems: list[Problem] = []
    warnings: list[str] = []
    raw = interpolate(raw, dict(os.environ if env is None else env), "", problems)
    if problems:
        raise UsageError(problems)

    raw = _strip_deprecated(raw, warnings)
    try:
        config = DocktorConfig.model_validate(raw)
    except ValidationError as e:
        raise UsageError(_problems_from(e, raw)) from None

    services = [_finish_service(i, s, config, path, problems, warnings) for i, s in enumerate(config.services)]
    _check_names(config, problems)
    if problems:
        raise UsageError(problems)

    # Absolute, so a daemon that changes directory (or runs from elsewhere) finds the same files.
    base = (path.parent if path else Path.cwd()).resolve()
    state_dir = config.state_dir or Path(".docktor")
    if not state_dir.is_absolute():
        state_dir = base / state_dir
    return config.model_copy(
        update={"services": services, "state_dir": state_dir, "path": path, "warnings": tuple(warnings)}
    )


def _strip_deprecated(raw: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    services = raw.get("services")
    if not isinstance(services, list):
        return raw
    cleaned = []
    for i, svc in enumerate(services):
        if isinstance(svc, dict):
            svc = dict(svc)
            for key, why in DEPRECATED_SERVICE_KEYS.items():
                if key in svc:
                    svc.pop(key)
                    warnings.append(f"services[{i}].{key}: deprecated, {why}")
        cleaned.append(svc)
    return {**raw, "services": cleaned}


def _finish_service(
    i: int,
    svc: ServiceConfig,
    config: DocktorConfig,
    path: Path | None,
    problems: list[Problem],
    warnings: list[str],
) -> ServiceConfig:
    """Cross-field checks and plugin validation that one model cannot express alone."""
    from tools import executor_names, source_kinds, source_module

    at = f"services[{i}]"
    update: dict[str, Any] = {}
    if svc.min_replicas > svc.max_replicas:
        problems.append(
            Problem(f"{at}.min_replicas", f"min_replicas ({svc.min_replicas}) is greater than max_replicas ({svc.max_replicas})")
        )

    compose_file = svc.compose_file or config.compose_file
    executor = svc.executor or ("compose" if compose_file else "local")
    if executor not in executor_names():
        problems.append(Problem(f"{at}.executor", f"unknown executor {executor!r}{_hint(executor, executor_names())}"))
    update["executor"] = executor
    if executor == "local" and not svc.command:
        problems.append(Problem(f"{at}.command", "the local executor needs a command to run"))
    if executor == "compose":
        if not compose_file:
            problems.append(Problem(f"{at}.compose_file", "the compose executor needs a compose_file"))
        else:
            update["compose_file"] = compose_file

    for group in ("scale_up_when", "scale_down_when"):
        for j, rule in enumerate(getattr(svc.rules, group)):
            if rule.metric not in KNOWN_METRICS:
                problems.append(
                    Problem(f"{at}.rules.{group}[{j}].metric", f"unknown metric {rule.metric!r}{_hint(rule.metric, KNOWN_METRICS)}")
                )
    if svc.policy == "target" and svc.target_per_replica is None:
        problems.append(Problem(f"{at}.target_per_replica", "policy 'target' needs target_per_replica"))

    if svc.queue is not None:
        kind = svc.queue.get("kind")
        if kind is None:
            problems.append(Problem(f"{at}.queue.kind", f"missing (one of: {', '.join(source_kinds())})"))
        elif kind not in source_kinds():
            problems.append(Problem(f"{at}.queue.kind", f"unknown queue kind {kind!r}{_hint(str(kind), source_kinds())}"))
        else:
            module = source_module(kind)
            queue = dict(svc.queue)
            check = getattr(module, "check_deprecated", lambda key, value: None)
            for key, why in getattr(module, "DEPRECATED_KEYS", {}).items():
                if key in queue:
                    value = queue.pop(key)
                    if (problem := check(key, value)) is not None:
                        problems.append(Problem(f"{at}.queue.{key}", problem))
                    else:
                        warnings.append(f"{at}.queue.{key}: deprecated, {why}")
            try:
                update["queue_settings"] = module.Settings.model_validate(queue)
            except ValidationError as e:
                problems.extend(_problems_from(e, queue, prefix=f"{at}.queue", model=module.Settings))
    elif any(m.startswith("queue.") for m in svc.rule_metrics()):
        problems.append(Problem(f"{at}.queue", "rules use queue.* metrics but no queue is configured"))
    return svc.model_copy(update=update)


def _check_names(config: DocktorConfig, problems: list[Problem]) -> None:
    seen: dict[str, int] = {}
    for i, svc in enumerate(config.services):
        if svc.name in seen:
            problems.append(Problem(f"services[{i}].name", f"duplicate service name {svc.name!r} (also services[{seen[svc.name]}])"))
        seen.setdefault(svc.name, i)


# --------------------------------------------------------------------------- error messages


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _loc_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``loc``, for did-you-mean hints."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        # unwrap list[X], X | None, Annotated[...]
        for _ in range(4):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            ann = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), args[0] if args else ann)
        current = ann
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _problems_from(
    err: ValidationError, raw: Any, prefix: str = "", model: type[BaseModel] = DocktorConfig
) -> list[Problem]:
    problems: list[Problem] = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        path = _loc_path(loc, prefix)
        kind = e["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1]) if loc else model
            names = [n for n, f in owner.model_fields.items() if not f.exclude] if owner else []
            msg = f"unknown key{_hint(str(loc[-1]), names)}"
        elif kind == "literal_error":
            msg = f"{e['msg'].replace('Input should be', 'must be')}, got {e.get('input')!r}"
        elif kind == "missing":
            msg = "required"
        else:
            msg = e["msg"].replace("Value error, ", "")
            if "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f", got {e['input']!r}"
        problem = Problem(path, msg)
        if problem not in problems:
            problems.append(problem)
    return problems


def summarize(svc: ServiceConfig) -> str:
    """One line per service for ``docktor validate``."""
    queue = ""
    if svc.queue_settings is not None:
        q = svc.queue_settings
        queue = f", queue {svc.queue.get('kind')} {getattr(q, 'stream', '')}/{getattr(q, 'consumer', '')}".rstrip("/")
    up, down = len(svc.rules.scale_up_when), len(svc.rules.scale_down_when)
    return (
        f"{svc.name}: {svc.executor} executor, replicas {svc.min_replicas}-{svc.max_replicas}, "
        f"every {svc.check_interval:g}s, policy {svc.policy}{queue}, rules {up} up / {down} down"
    )
