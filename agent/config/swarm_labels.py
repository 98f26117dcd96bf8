"""A Swarm service's ``deploy.labels`` as a service block of ``docktor.yaml``.

Every Swarm autoscaler is configured by labels on the services it scales; Docktor's are the
service block of ``docktor.yaml`` flattened into ``docktor.*`` keys, and validated by the same
loader and models (one schema, the same messages)::

    docktor.enable: "true"                          # opts the service in
    docktor.min_replicas: "1"
    docktor.queue.kind: nats                        # a mapping: its keys joined with dots
    docktor.queue.stream: JOBS
    docktor.rules.scale_up_when.0.metric: queue.backlog   # a list: its items numbered from 0
    docktor.rules.scale_up_when.0.op: ">"
    docktor.rules.scale_up_when.0.value: "500"

A value is a number (``2``, ``0.5``) or a boolean (``true``) when YAML reads it so, a flow list or
mapping when it starts with ``[`` or ``{`` (read by the same bounded loader as a file), and
otherwise the string as written (``>``, ``5s``, ``nats://...``: no quotes needed). ``${VAR}`` is not read from Docktor's environment: the labels are
the engine's data (``docker stack deploy`` has already filled them in).

The service is the one the labels are on: ``name``, ``executor``, ``service`` and ``stack`` are
refused (:data:`SERVICE_OWN`); the executor is ``swarm`` on that service. :func:`discovered` turns
every labelled service into a :class:`~docktor.agent.config.model.ServiceConfig`, or into the
problems that keep it out, each named ``swarm service NAME: label docktor.KEY``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig, ServiceConfig
from docktor.agent.problems import Problem, UsageError

#: the labels Docktor reads start with this
PREFIX = "docktor."
#: the label that opts a service in
ENABLE = "docktor.enable"

#: service keys the labels cannot set: the Swarm service they are on answers them
SERVICE_OWN = {
    "name": "the service's name is the Swarm service's",
    "executor": "a labelled service is scaled by the swarm executor",
    "service": "the Swarm service scaled is the one these labels are on",
    "stack": "the Swarm service scaled is the one these labels are on (its full name includes the stack)",
}

_INDEX = re.compile(r"^(0|[1-9][0-9]{0,3})$")
_PATH = re.compile(r"services\[0\]\.?")
_BRACKET = re.compile(r"\[(\d+)\]")


def enabled(labels: Mapping[str, str]) -> bool | None:
    """True/False when ``docktor.enable`` says so, None when it is something else."""
    value = str(labels.get(ENABLE, "")).strip().lower()
    return True if value in ("true", "1", "yes") else False if value in ("false", "0", "no", "") else None


def _value(text: str) -> Any:
    """A label's value: a number, a boolean, or a flow list/mapping (``[a, b]``) as YAML reads it
    (bounded); anything else is the string as written (``>``, ``5s``, ``nats://...``)."""
    from docktor.tools.sdk.safe_yaml import load_yaml

    try:
        value = load_yaml(text)
    except Exception:  # any reason it is not YAML: then it is the string as written
        return text
    if isinstance(value, bool | int | float) or (text.lstrip()[:1] in ("[", "{") and isinstance(value, list | dict)):
        return value
    return text


def unflatten(labels: Mapping[str, str], problems: list[Problem], at: str) -> dict[str, Any]:
    """The ``docktor.*`` labels (but ``docktor.enable``) as the nested service block they flatten."""
    tree: dict[str, Any] = {}
    for key in sorted(labels):
        if not key.startswith(PREFIX) or key == ENABLE:
            continue
        parts = key[len(PREFIX):].split(".")
        if not all(parts):
            problems.append(Problem(f"{at}: label {key}", "empty part in the key (docktor.a.b, no '..' or trailing '.')"))
            continue
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(Problem(f"{at}: label {key}", f"docktor.{'.'.join(parts[:i + 1])} is set to a value too: "
                                                              "give either the value or the keys under it"))
                break
            node = child
        else:
            if isinstance(node.get(parts[-1]), dict):
                problems.append(Problem(f"{at}: label {key}", "keys under it are set too: give either the value or the keys under it"))
                continue
            node[parts[-1]] = _value(labels[key])
    block = _lists(tree, "docktor", problems, at)
    if not isinstance(block, dict):  # docktor.0=...: the service block is a mapping
        problems.append(Problem(f"{at}: label docktor.0", "the labels are a service's settings (docktor.min_replicas ...), not a list"))
        return {}
    return block


def _lists(node: Any, key: str, problems: list[Problem], at: str) -> Any:
    """Mappings whose keys are all 0, 1, 2 ... as the lists they number."""
    if not isinstance(node, dict):
        return node
    out = {k: _lists(v, f"{key}.{k}", problems, at) for k, v in node.items()}
    if not out or not all(_INDEX.match(k) for k in out):
        return out
    indexes = sorted(int(k) for k in out)
    if indexes != list(range(len(indexes))):
        missing = next(i for i in range(len(indexes) + 1) if i not in indexes)
        problems.append(Problem(f"{at}: label {key}.{missing}", f"missing: a list's items are numbered 0, 1, 2 ... "
                                                               f"without gaps (found {', '.join(map(str, indexes))})"))
        return out
    return [out[str(i)] for i in indexes]


def flatten(block: Mapping[str, Any], prefix: str = PREFIX) -> dict[str, str]:
    """A service block of docktor.yaml as the labels that say the same (:func:`unflatten`'s inverse)."""
    out: dict[str, str] = {}
    for key, value in block.items():
        items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else None
        if items is None:
            out[f"{prefix}{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            out.update(flatten({str(k): v for k, v in items}, f"{prefix}{key}."))
    return out


def label_path(path: str) -> str:
    """The loader's path inside the one service (``services[0].rules.scale_up_when[1].op``) as the
    label that sets it (``docktor.rules.scale_up_when.1.op``)."""
    inside = _BRACKET.sub(r".\1", _PATH.sub("", path, count=1))
    return f"{PREFIX}{inside}" if inside else "labels"


def _escape(node: Any) -> Any:
    """``$`` kept literal: the loader's ``${VAR}`` would read Docktor's environment."""
    if isinstance(node, dict):
        return {k: _escape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_escape(v) for v in node]
    return node.replace("$", "$$") if isinstance(node, str) else node


def service_config(name: str, labels: Mapping[str, str], base: DocktorConfig) -> ServiceConfig:
    """The labelled Swarm service ``name`` as a service of ``base``; raises :class:`UsageError`
    whose problems name the service and the label."""
    from docktor.agent.config.load import parse_mapping

    at = f"swarm service {name}"
    problems: list[Problem] = []
    block = unflatten(labels, problems, at)
    for key in SERVICE_OWN:
        if key in block:
            problems.append(Problem(f"{at}: label {PREFIX}{key}", f"not here: {SERVICE_OWN[key]}"))
    if problems:
        raise UsageError(problems)
    raw = {"state_dir": str(base.state_dir) if base.state_dir else None,
           "services": [{**_escape(block), "name": name, "executor": "swarm", "service": name}]}
    path = base.path or Path("docktor.yaml")
    try:
        config = parse_mapping(raw, path, {})
    except UsageError as e:
        raise UsageError([Problem(f"{at}: label {label_path(p.path)}", _PATH.sub("", p.message).replace("services[0]", "it"))
                          for p in e.problems]) from None
    return config.services[0]


@dataclass
class Discovered:
    """What one look at the labelled services found."""

    services: list[ServiceConfig] = field(default_factory=list)
    #: per Swarm service whose labels do not validate: its problems, one line
    refused: dict[str, str] = field(default_factory=dict)


def discovered(labelled: Mapping[str, Mapping[str, str]], base: DocktorConfig) -> Discovered:
    """Every opted-in service of ``labelled`` (Swarm service name -> its labels) as a service of
    ``base``, in name order; a service ``base`` already lists by that name is refused."""
    out = Discovered()
    listed = {s.name for s in base.services}
    for name in sorted(labelled):
        labels = labelled[name]
        on = enabled(labels)
        if on is False:
            continue
        if on is None:
            out.refused[name] = f"swarm service {name}: label {ENABLE}: must be true or false, got {labels[ENABLE]!r}"
            continue
        if name in listed:
            out.refused[name] = (f"swarm service {name}: labelled docktor.enable=true, and {base.path or 'the config'} "
                                 "lists a service of that name: the file's is scaled, the labels are ignored")
            continue
        try:
            out.services.append(service_config(name, labels, base))
        except UsageError as e:
            out.refused[name] = "; ".join(str(p) for p in e.problems)
    return out
