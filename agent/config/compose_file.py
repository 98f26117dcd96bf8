"""A Compose file as Docktor's config: its ``x-docktor:`` blocks read as ``docktor.yaml``.

Compose ignores keys that start with ``x-``, so one file runs the stack with or without Docktor.
The top-level ``x-docktor:`` holds docktor.yaml's top-level settings (``mode``, ``llm``,
``metrics``, ``state_dir`` ...); a service's ``x-docktor:`` holds docktor.yaml's service block
without ``name``, ``executor``, ``compose_file`` and ``compose_service``, which the file itself
answers: the service is scaled by the compose executor, on this file, under its own name.

:func:`translate` turns the file into the dict a docktor.yaml would have been, which the loader
then validates with the same models (one schema); :class:`Paths` turns the problems' paths back
into the Compose file's (``services[0].max_replicas`` -> ``services.worker.x-docktor.max_replicas``).
The ``models:`` each service declares (Compose injects ``<KEY>_URL`` and ``<KEY>_MODEL``, or the
long syntax's ``endpoint_var`` / ``model_var``) are read by :func:`declared_models` so that
``llm: {from: compose}`` knows which variables to read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from docktor.agent.problems import Problem

#: the extension key Docktor reads, at the top level and in each service
XKEY = "x-docktor"

#: docktor.yaml's service keys that the Compose file answers itself
SERVICE_OWN = {
    "name": "the service's name is its key under services:",
    "executor": "a service of a Compose file is scaled by the compose executor",
    "compose_file": "the compose file is this file",
    "compose_service": "the service scaled is the one this block is in",
}

#: docktor.yaml's top-level keys that have no place in the top-level x-docktor
TOP_NOT_HERE = {
    "services": f"not here: each service's settings go in its own {XKEY}: block under services:",
    "compose_file": "not here: the compose file is this file",
    "service": f"not here: each service's settings go in its own {XKEY}: block under services:",
    "scaling": f"not here: each service's settings go in its own {XKEY}: block under services:",
}

_INDEXED = re.compile(r"services\[(\d+)\]")


def is_compose(raw: dict[Any, Any]) -> bool:
    """A Compose file's ``services:`` is a mapping; docktor.yaml's is a list."""
    services = raw.get("services")
    return isinstance(services, dict) or (services is None and XKEY in raw)


@dataclass(frozen=True)
class Paths:
    """Turns the loader's paths (``services[0].queue``, ``llm.model``) into the Compose file's."""

    file: str
    services: tuple[str, ...]

    def path(self, path: str) -> str:
        m = _INDEXED.match(path)
        if m is not None and int(m.group(1)) < len(self.services):
            inside = f"services.{self.services[int(m.group(1))]}.{XKEY}{path[m.end():]}"
        elif not path or path == "services" or path.startswith(("services.", XKEY)):
            inside = path
        else:
            inside = f"{XKEY}.{path}"
        return f"{self.file}: {inside}" if inside else self.file

    def text(self, text: str) -> str:
        """``services[0]`` named inside a message (``also services[0].sources[0]``)."""
        def named(m: re.Match[str]) -> str:
            i = int(m.group(1))
            return f"services.{self.services[i]}.{XKEY}" if i < len(self.services) else m.group(0)

        return _INDEXED.sub(named, text)

    def problem(self, p: Problem) -> Problem:
        return Problem(self.path(p.path), self.text(p.message))

    def warning(self, text: str) -> str:
        return f"{self.file}: {self.text(text) if _INDEXED.match(text) else f'{XKEY}.{text}'}"


def translate(raw: dict[Any, Any], file: str, file_name: str) -> tuple[dict[str, Any], Paths]:
    """The Compose file ``raw`` as a docktor.yaml dict, and how to name its paths. ``file`` is the
    file as the user named it (for messages), ``file_name`` its name in its folder (for the executor).
    Raises :class:`UsageError` for what no docktor.yaml could have got wrong."""
    from docktor.agent.problems import UsageError

    problems: list[Problem] = []
    top = raw.get(XKEY)
    out: dict[str, Any] = {}
    if top is not None and not isinstance(top, dict):
        problems.append(Problem(XKEY, "must be a mapping of Docktor's top-level settings (mode, llm, metrics, state_dir, ...)"))
    for key, value in (top or {}).items() if isinstance(top, dict) else ():
        if key in TOP_NOT_HERE:
            problems.append(Problem(f"{XKEY}.{key}", TOP_NOT_HERE[key]))
        else:
            out[key] = value
    services = raw.get("services")
    names: list[str] = []
    listed: list[dict[str, Any]] = []
    if not isinstance(services, dict):
        problems.append(Problem("services", "must be a mapping of Compose services"))
        services = {}
    for name, block in services.items():
        if not isinstance(block, dict) or XKEY not in block:
            continue
        at = f"services.{name}.{XKEY}"
        settings = block[XKEY] if block[XKEY] is not None else {}
        if not isinstance(settings, dict):
            problems.append(Problem(at, "must be a mapping: docktor.yaml's service settings (min_replicas, queue, rules ...)"))
            continue
        own = [key for key in settings if key in SERVICE_OWN]
        for key in own:
            problems.append(Problem(f"{at}.{key}", f"not here: {SERVICE_OWN[key]}"))
        if own:
            continue
        names.append(str(name))
        listed.append({"name": str(name), "executor": "compose", "compose_file": file_name, **settings})
    if not listed and not problems:
        problems.append(Problem("services", f"no service has an {XKEY}: block, so Docktor has nothing to scale "
                                            f"(add {XKEY}: {{max_replicas: 4, queue: ...}} to each service it should scale)"))
    if problems:
        raise UsageError([Problem(f"{file}: {p.path}", p.message) for p in problems])
    out["services"] = listed
    return out, Paths(file, tuple(names))


@dataclass(frozen=True)
class DeclaredModel:
    """One ``models:`` entry of a service: the variables Compose sets in its containers."""

    service: str
    key: str
    endpoint_var: str
    model_var: str


def declared_models(raw: dict[Any, Any]) -> list[DeclaredModel]:
    """Every model a service of the Compose file asks for, with the variables Compose injects:
    ``<KEY>_URL`` and ``<KEY>_MODEL`` (the key upper-cased, ``-`` as ``_``), unless the long
    syntax names them (``endpoint_var``, ``model_var``). Malformed entries are Compose's to refuse."""
    services = raw.get("services")
    found: list[DeclaredModel] = []
    for service, block in (services.items() if isinstance(services, dict) else ()):
        models = block.get("models") if isinstance(block, dict) else None
        if isinstance(models, list):
            entries: list[tuple[Any, Any]] = [(key, None) for key in models]
        elif isinstance(models, dict):
            entries = list(models.items())
        else:
            continue
        for key, long in entries:
            if not isinstance(key, str):
                continue
            prefix = key.upper().replace("-", "_")
            long = long if isinstance(long, dict) else {}
            endpoint_var = long.get("endpoint_var") or f"{prefix}_URL"
            model_var = long.get("model_var") or f"{prefix}_MODEL"
            found.append(DeclaredModel(str(service), key, str(endpoint_var), str(model_var)))
    return found


def llm_from_models(raw: dict[str, Any], declared: list[DeclaredModel], problems: list[Problem]) -> None:
    """``llm:`` without its own ``endpoint_var``/``model_var`` reads the variables the Compose file
    declares for it: those of its one model (several: ``from: compose`` must say which)."""
    llm = raw.get("llm")
    if not isinstance(llm, dict) or "endpoint_var" in llm or "model_var" in llm or "base_url" in llm:
        return
    pairs = sorted({(d.endpoint_var, d.model_var) for d in declared})
    if len(pairs) == 1:
        raw["llm"] = {**llm, "endpoint_var": pairs[0][0], "model_var": pairs[0][1]}
    elif len(pairs) > 1 and llm.get("from") == "compose":
        listing = ", ".join(f"{d.endpoint_var} (models: {d.key} of {d.service})" for d in declared)
        problems.append(Problem("llm.from", f"the Compose file declares several models ({listing}): "
                                            "say which with llm.endpoint_var and llm.model_var"))
