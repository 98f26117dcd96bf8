"""Load ``docktor.yaml``: YAML -> ``${VAR}`` interpolation -> older formats -> models and plugins.

Whatever the input, the loader raises nothing but :class:`~docktor.agent.problems.UsageError`, with
every problem it can find at once (not one round per fix), each naming its path
(``services[0].rules.scale_up_when[1].op``) so the CLI prints one line per problem and exits 2.

A service's executor is written either nested (``executor: {kind: local, command: ...}``) or
flat, the way Docktor configs have always been written (``executor: local`` with ``command:``
beside it; ``compose_file:`` alone means ``executor: compose``). Its sources are a ``sources:``
list (each with a ``name``) or the single-source form ``queue:``. Every block is validated by its
plugin's own ``Settings`` model.

A Compose file (its ``services:`` a mapping) is read through its ``x-docktor`` blocks, translated
into the same dict by :mod:`.compose_file` and validated the same way, its problems named by
their place in the Compose file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from docktor.agent.config import compat, compose_file
from docktor.agent.config.messages import did_you_mean, join, problems_from, shown
from docktor.agent.config.model import DocktorConfig, ExecutorSpec, OnMissing, Rules, ServiceConfig, SourceSpec
from docktor.agent.core.derived import REPLICA_METRICS, derivable
from docktor.agent.core.policies import POLICIES
from docktor.agent.problems import Problem, UsageError
from docktor.agent.redact import register, secret_names
from docktor.tools.registry import PluginError, executor_kinds, executor_plugin, source_kinds, source_plugin
from docktor.tools.sdk import Context
from docktor.tools.sdk.safe_yaml import MAX_BYTES, YAMLTooBig, load_yaml

#: source names that would read like a metric group of their own
RESERVED_SOURCE_NAMES = frozenset({"queue", "replicas", "cpu", "mem"})
_SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _TopLevel(DocktorConfig):
    services: list[Any] = Field(min_length=1)  # each is validated on its own


# --------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
#: a ``${VAR}`` whose name says it holds a credential: its value is scrubbed from every message
_SECRET_VAR = re.compile(r"(?i)pass|secret|token|key|cred|auth")


def interpolate(node: Any, env: Mapping[str, str], path: str, problems: list[Problem]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, join(path, k), problems) for k, v in node.items()}
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
        if _SECRET_VAR.search(name):
            register(value)
        return value

    return _VAR.sub(sub, node)


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> DocktorConfig:
    """Load, interpolate and validate a config file. Raises only :class:`UsageError`."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more than can pass (a config pointed at /dev/zero)
        if len(data) > MAX_BYTES:
            raise UsageError([Problem(str(p), f"refused: too large: more than {MAX_BYTES:,} bytes")])
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise UsageError([Problem(str(p), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError([Problem(str(p), f"cannot read: {e}")]) from None
    return parse_config(text, p, env)


def parse_config(text: str, path: Path | None = None, env: Mapping[str, str] | None = None) -> DocktorConfig:
    where = str(path) if path else "<config>"
    try:
        raw = load_yaml(text)
    except YAMLTooBig as e:
        raise UsageError([Problem(where, f"refused: {e}")]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError([Problem(where, f"not valid YAML{at}: {problem}")]) from None
    except (ValueError, TypeError, RecursionError, MemoryError) as e:
        # what the constructors raise for a value they cannot build (an integer of 5,000 digits)
        said = str(e).split(":")[0].strip()  # the first clause; the rest is advice for Python programmers
        raise UsageError([Problem(where, f"not valid YAML: {said or type(e).__name__}")]) from None
    if not isinstance(raw, dict):
        raise UsageError([Problem(where, "must be a YAML mapping with a 'services' list")])
    if compose_file.is_compose(raw):
        return _parse_compose(raw, where, path, env)
    # Compose's extension fields: top-level x-* keys hold anchors for the services to alias
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    return _parse_dict(raw, path, env)


def _parse_compose(raw: dict[Any, Any], where: str, path: Path | None, env: Mapping[str, str] | None) -> DocktorConfig:
    """A Compose file: its x-docktor blocks as a docktor.yaml, validated by the same models, the
    problems named by their place in the Compose file."""
    translated, paths = compose_file.translate(raw, where, path.name if path else "docker-compose.yaml")
    problems: list[Problem] = []
    compose_file.llm_from_models(translated, compose_file.declared_models(raw), problems)
    if problems:
        raise UsageError([paths.problem(p) for p in problems])
    try:
        config = _parse_dict(translated, path, env)
    except UsageError as e:
        raise UsageError([paths.problem(p) for p in e.problems]) from None
    return config.model_copy(update={"warnings": tuple(paths.warning(w) for w in config.warnings), "from_compose": True})


def _parse_dict(raw: dict[str, Any], path: Path | None, env: Mapping[str, str] | None) -> DocktorConfig:
    problems: list[Problem] = []
    warnings: list[str] = []
    raw = interpolate(raw, os.environ if env is None else env, "", problems)
    if problems:
        raise UsageError(problems)
    raw = compat.translate(raw, warnings, problems)

    base = (path.parent if path else Path.cwd()).resolve()
    try:
        top = _TopLevel.model_validate(raw)
    except ValidationError as e:
        problems.extend(problems_from(e, raw, model=DocktorConfig))
        top = None
    raw_services = raw.get("services")
    services: list[ServiceConfig] = []
    if isinstance(raw_services, list):
        state_dir = _state_dir(top, base)
        for i, item in enumerate(raw_services):
            svc = _service(i, item, base, state_dir, problems, warnings)
            if svc is not None:
                services.append(svc)
        _check_names(raw_services, problems)
    if problems or top is None:
        raise UsageError(problems)
    _register_secrets(top, services, os.environ if env is None else env)
    return DocktorConfig.model_validate(
        {**top.model_dump(exclude={"services", "path", "warnings"}), "services": services}
    ).model_copy(update={"state_dir": _state_dir(top, base), "path": path, "warnings": tuple(warnings)})


def _register_secrets(top: _TopLevel, services: list[ServiceConfig], env: Mapping[str, str]) -> None:
    """Every credential the config names by environment variable (``password_env``, ``token_env``,
    ``llm.api_key_env``, any ``*_env`` setting): from here on its value is scrubbed from every
    message, record and log line."""
    names = secret_names(top.llm) + secret_names(top.mcp)  # the LLM's key, the MCP server's token
    for svc in services:
        for spec in (svc.executor, *svc.sources):
            if spec is not None:
                names += secret_names(spec.settings)
    for name in names:
        register(env.get(name))


def _state_dir(top: _TopLevel | None, base: Path) -> Path:
    # Absolute, so a daemon that changes directory (or runs from elsewhere) finds the same files.
    state_dir = (top.state_dir if top is not None else None) or Path(".docktor")
    return state_dir if state_dir.is_absolute() else base / state_dir


# --------------------------------------------------------------------------- one service


def _service(
    i: int, item: Any, base: Path, state_dir: Path, problems: list[Problem], warnings: list[str]
) -> ServiceConfig | None:
    at = f"services[{i}]"
    if not isinstance(item, dict):
        problems.append(Problem(at, "must be a mapping with at least a name"))
        return None
    data = dict(item)
    found: list[Problem] = []
    context = Context(service=str(data.get("name", "")), base_dir=base, state_dir=state_dir)

    executor = _executor(at, data, context, found)
    sources = _sources(at, data, context, found, warnings)
    executor_keys = [] if executor is None else list(executor_plugin(executor.kind).Settings.model_fields)
    try:
        svc: ServiceConfig | None = ServiceConfig.model_validate(data)
    except ValidationError as e:
        found.extend(problems_from(e, data, prefix=at, model=ServiceConfig, extra_names=executor_keys))
        svc = None
        if executor is not None and sources is not None:  # a mistyped metric too, in the same round
            found.extend(_check_rule_metrics(at, data.get("rules"), executor, sources))

    if svc is not None:
        if svc.min_replicas > svc.max_replicas:
            found.append(Problem(f"{at}.min_replicas", f"min_replicas ({svc.min_replicas}) is greater than max_replicas ({svc.max_replicas})"))
        if svc.policy == "target" and svc.target_per_replica is None:
            found.append(Problem(f"{at}.target_per_replica", "policy 'target' needs target_per_replica"))
        if svc.policy == "rules" and svc.headroom:
            found.append(Problem(f"{at}.headroom", "applies to the sizing policies (target, docktor): policy 'rules' steps, it sizes nothing"))
        if executor is not None and sources is not None:
            svc = svc.model_copy(update={"executor": executor, "sources": tuple(sources)})
            found.extend(_check_metrics(at, svc))
            if not sources and not found:
                warnings.append(f"{at}: no source (queue: or sources:): only the executor's metrics are observed")
    problems.extend(found)
    return None if found else svc


def _executor(at: str, data: dict[str, Any], context: Context, problems: list[Problem]) -> ExecutorSpec | None:
    """Take the executor's settings out of ``data`` (nested or flat form) and validate them."""
    value = data.pop("executor", None)
    if isinstance(value, dict):
        block, where, flat = dict(value), f"{at}.executor", False
        kind = block.get("kind")
        if kind is None:
            problems.append(Problem(f"{where}.kind", f"required (one of: {', '.join(executor_kinds())})"))
            return None
    elif value is None or isinstance(value, str):
        kind = value or ("compose" if "compose_file" in data else "local")
        block, where, flat = {"kind": kind}, at, True
    else:
        problems.append(Problem(f"{at}.executor", f"must be an executor name or a mapping with a kind, got {shown(value)}"))
        return None
    try:
        plugin = executor_plugin(str(kind))
    except PluginError as e:
        problems.append(Problem(f"{at}.executor" + (".kind" if not flat else ""), _plugin_problem(e, "executor", str(kind), executor_kinds())))
        return None
    if flat:  # the plugin's keys written beside the core's
        for key in plugin.Settings.model_fields:
            if key != "kind" and key in data:
                block[key] = data.pop(key)
    try:
        settings = plugin.Settings.model_validate(block)
    except ValidationError as e:
        problems.extend(problems_from(e, block, prefix=where, model=plugin.Settings, hint=_executor_hint(plugin.kind, flat)))
        return None
    return ExecutorSpec(plugin.kind, settings, where)


def _executor_hint(kind: str, flat: bool) -> str:
    return f" by the {kind} executor" if flat else ""


def _sources(
    at: str, data: dict[str, Any], context: Context, problems: list[Problem], warnings: list[str]
) -> list[SourceSpec] | None:
    queue = data.pop("queue", None)
    listed = data.pop("sources", None)
    if queue is not None and listed is not None:
        problems.append(Problem(f"{at}.sources", "give either queue: (one source) or sources: (a list), not both"))
        return None
    blocks: list[tuple[str, Any]]
    if queue is not None:
        blocks = [(f"{at}.queue", queue)]
    elif listed is None:
        blocks = []
    elif isinstance(listed, list):
        blocks = [(f"{at}.sources[{j}]", b) for j, b in enumerate(listed)]
    else:
        problems.append(Problem(f"{at}.sources", "must be a list of sources, each with a name and a kind"))
        return None
    specs: list[SourceSpec] = []
    ok = True
    seen: dict[str, str] = {}
    for j, (where, block) in enumerate(blocks):
        spec = _source(where, block, j == 0, queue is not None, problems, warnings)
        if spec is None:
            ok = False
            continue
        if spec.name in seen:
            problems.append(Problem(f"{where}.name", f"duplicate source name {spec.name!r} (also {seen[spec.name]})"))
            ok = False
        seen.setdefault(spec.name, where)
        specs.append(spec)
    return specs if ok else None


def _source(
    where: str, block: Any, primary: bool, single: bool, problems: list[Problem], warnings: list[str]
) -> SourceSpec | None:
    if not isinstance(block, dict):
        problems.append(Problem(where, "must be a mapping with a kind"))
        return None
    block = dict(block)
    kind = block.get("kind")
    name = block.pop("name", None) if not single else None
    on_missing = OnMissing()
    if "on_missing" in block:  # Docktor's own key, whatever the plugin: taken out before it validates
        given = block.pop("on_missing")
        try:
            on_missing = OnMissing.model_validate(given)
        except ValidationError as e:
            problems.extend(problems_from(e, given, prefix=f"{where}.on_missing", model=OnMissing))
            return None
    if kind is None:
        problems.append(Problem(f"{where}.kind", f"required (one of: {', '.join(source_kinds())})"))
        return None
    try:
        plugin = source_plugin(str(kind))
    except PluginError as e:
        problems.append(Problem(f"{where}.kind", _plugin_problem(e, "source kind", str(kind), source_kinds())))
        return None
    name = plugin.kind if name is None else name
    if not isinstance(name, str) or not _SOURCE_NAME.match(name):
        problems.append(Problem(f"{where}.name", f"must be lower-case letters, digits and _ (it prefixes the source's metrics), got {shown(name)}"))
        return None
    if name in RESERVED_SOURCE_NAMES and not primary:
        problems.append(Problem(f"{where}.name", f"{name!r} is a metric group; choose another name"))
        return None
    for key, why in compat.DEPRECATED_SOURCE_KEYS.get(plugin.kind, {}).items():
        if key in block:
            value = block.pop(key)
            if (problem := compat.deprecated_source_key_problem(plugin.kind, key, value)) is not None:
                problems.append(Problem(f"{where}.{key}", problem))
                return None
            warnings.append(f"{where}.{key}: deprecated, {why}")
    try:
        settings = plugin.Settings.model_validate(block)
    except ValidationError as e:
        problems.extend(problems_from(e, block, prefix=where, model=plugin.Settings))
        return None
    return SourceSpec(name=name, kind=plugin.kind, settings=settings, primary=primary, where=where, on_missing=on_missing)


def _plugin_problem(e: PluginError, what: str, kind: str, known: list[str]) -> str:
    if kind in known:  # installed but broken: the registry's message says how
        return str(e)
    return f"unknown {what} {kind!r}{did_you_mean(kind, known)} (installed: {', '.join(known) or 'none'})"


# --------------------------------------------------------------------------- metrics


def available_metrics(executor: ExecutorSpec | None, sources: Sequence[SourceSpec]) -> dict[str, str]:
    """Every metric a service's plugins provide, with who provides it (for messages)."""
    out: dict[str, str] = {name: "executor" for name in REPLICA_METRICS}
    if executor is not None:
        for name in executor_plugin(executor.kind).metrics_for(executor.settings):
            out[name] = f"executor {executor.kind}"
    for spec in sources:
        for name in source_plugin(spec.kind).metrics_for(spec.settings):
            out[spec.metric_name(name)] = f"source {spec.name}"
    for name in derivable(frozenset(out)):
        out[name] = "derived"
    return out


def _check_metrics(at: str, svc: ServiceConfig) -> list[Problem]:
    """A rule or a policy that needs a metric nothing provides would hold forever as 'missing'."""
    available = available_metrics(svc.executor, svc.sources)
    listing = ", ".join(sorted(available))
    found = _unknown_rule_metrics(at, svc.rules, available)
    needed = sorted(POLICIES[svc.policy].required(svc) - available.keys())
    if needed:
        instead = "policy: target (with target_per_replica) or policy: rules" if "queue.backlog" in available else "policy: rules"
        have = "this service has no source" if not svc.sources else f"available: {listing}"
        found.append(Problem(
            f"{at}.policy",
            f"policy {svc.policy!r} needs {', '.join(needed)}, which no source of this service provides ({have}); "
            f"use {instead}",
        ))
    return found


def _unknown_rule_metrics(at: str, rules: Rules, available: Mapping[str, str]) -> list[Problem]:
    listing = ", ".join(sorted(available))
    return [
        Problem(
            f"{at}.rules.{group}[{j}].metric",
            f"unknown metric {rule.metric!r}{did_you_mean(rule.metric, available)}: not provided by this service's "
            f"sources or executor (available: {listing})",
        )
        for group in ("scale_up_when", "scale_down_when")
        for j, rule in enumerate(getattr(rules, group))
        if rule.metric not in available
    ]


def _check_rule_metrics(at: str, raw_rules: Any, executor: ExecutorSpec, sources: list[SourceSpec]) -> list[Problem]:
    """The rules' metrics of a service whose other settings failed (the rules themselves parse)."""
    try:
        rules = Rules.model_validate(raw_rules if raw_rules is not None else {})
    except ValidationError:  # the service's own validation has named what is wrong in them
        return []
    return _unknown_rule_metrics(at, rules, available_metrics(executor, sources))


def _check_names(raw_services: list[Any], problems: list[Problem]) -> None:
    seen: dict[str, int] = {}
    for i, svc in enumerate(raw_services):
        name = svc.get("name") if isinstance(svc, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(Problem(f"services[{i}].name", f"duplicate service name {name!r} (also services[{seen[name]}])"))
        seen.setdefault(name, i)


# --------------------------------------------------------------------------- summaries


def summarize(svc: ServiceConfig) -> str:
    """One line per service for ``docktor validate``."""
    executor = "no" if svc.executor is None else executor_plugin(svc.executor.kind).describe(svc.executor.settings)
    sources = [
        ("queue " if s.primary else f"source {s.name}: ") + source_plugin(s.kind).describe(s.settings) for s in svc.sources
    ]
    up, down = len(svc.rules.scale_up_when), len(svc.rules.scale_down_when)
    return ", ".join([
        f"{svc.name}: {executor} executor",
        f"replicas {svc.min_replicas}-{svc.max_replicas}",
        f"every {svc.check_interval:g}s",
        f"policy {svc.policy}",
        *sources,
        f"rules {up} up / {down} down",
    ])
