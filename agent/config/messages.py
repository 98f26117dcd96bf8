"""Pydantic's validation errors as Docktor's problems: one line each, naming the field by its path
in the YAML (``services[0].queue.stream``), echoing no secret, with a "did you mean" for a typo."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from docktor.agent.config.model import DocktorConfig
from docktor.agent.problems import Problem
from docktor.tools.sdk import SECRET_ERROR


def join(path: str, key: Any) -> str:
    """``services[0]`` + ``queue`` -> ``services[0].queue``."""
    return f"{path}.{key}" if path else str(key)


def shown(value: Any) -> str:
    """A value echoed in a message: credentials scrubbed (by ``Problem``), long ones cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    if len(word) > 100:  # nothing that long is a typo of a key, and difflib's cost grows with it
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _loc_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else join(out, part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``loc``, for did-you-mean hints."""
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


def _input_loc(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """``loc`` without pydantic's own steps (``function-after[...]``, union tags): a step is kept
    when it is a key (or index) of the input at that point, so a user's key with brackets in it
    stays in the path."""
    out: list[Any] = []
    node = raw
    for part in loc:
        if (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            out.append(part)
            node = node[part]
        elif isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # pydantic's step, e.g. a validator wrapper or a union member
        else:
            out.append(part)  # a key the input lacks (a required field): part of the path
            node = None
    return tuple(out)


def problems_from(
    err: ValidationError,
    raw: Any,
    prefix: str = "",
    model: type[BaseModel] = DocktorConfig,
    extra_names: Iterable[str] = (),
    hint: str = "",
) -> list[Problem]:
    problems: list[Problem] = []
    for e in err.errors(include_url=False):
        loc = _input_loc(e["loc"], raw)
        path = _loc_path(loc, prefix)
        kind = e["type"]
        if kind == "extra_forbidden" and loc:
            owner = _model_at(model, loc[:-1])
            names = [f.alias or n for n, f in owner.model_fields.items() if not f.exclude] if owner else []
            if owner is model:
                names += list(extra_names)
            msg = f"unknown key{did_you_mean(str(loc[-1]), names)}"
        elif kind == "literal_error":
            msg = f"{e['msg'].replace('Input should be', 'must be')}, got {shown(e.get('input'))}"
        elif kind == "missing":
            msg = "required" + hint
        else:
            msg = e["msg"].replace("Value error, ", "")
            if "input" in e and not isinstance(e["input"], dict | list) and kind != SECRET_ERROR:
                msg += f", got {shown(e['input'])}"
        problem = Problem(path, msg)
        if problem not in problems:
            problems.append(problem)
    return problems


