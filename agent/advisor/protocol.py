"""What Docktor and the LLM say to each other: the answer schema, its parsing, and the tools.

Everything that crosses the wire is validated here with pydantic. Small local models bend the
format (numbers as strings, prose around the JSON, ``"Scale Up"``), so parsing coerces those and
rejects anything else with a message short enough to show the model in one repair retry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

Action = Literal["scale_up", "scale_down", "hold"]

#: the model's reason is logged; keep one short line whatever it wrote
REASON_MAX = 200
#: what the schema asks for: every generated character is paid for, twice on a repair
REASON_WIRE_MAX = 120
#: confidence on a coarse grid: grammar-constrained servers (llama.cpp) honour an enum of numbers,
#: not a numeric range, and a finer grain means nothing coming from a language model
CONFIDENCE_GRID = [round(i / 10, 1) for i in range(11)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


# --------------------------------------------------------------------------- the answer


def _int_like(value: Any) -> Any:
    """``"5"``, ``"5.0"`` and ``5.0`` are 5; ``5.5`` and ``"five"`` are left for pydantic to reject."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if math.isfinite(number) and number.is_integer() else value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _action_like(value: Any) -> Any:
    if isinstance(value, str):
        word = re.sub(r"[\s-]+", "_", value.strip().lower())
        return {"up": "scale_up", "down": "scale_down", "scaleup": "scale_up", "scaledown": "scale_down"}.get(word, word)
    return value


def _one_line(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub(" ", value).strip()[:REASON_MAX]
    return value


class LLMAnswer(BaseModel):
    """The model's proposal. The target is what gets clamped; the action must agree with it."""

    model_config = ConfigDict(extra="ignore")

    action: Annotated[Action, BeforeValidator(_action_like)]
    target_replicas: Annotated[int, BeforeValidator(_int_like), Field(ge=0)]
    confidence: float = Field(ge=0, le=1)
    reason: Annotated[str, BeforeValidator(_one_line)] = ""


def answer_schema(max_replicas: int) -> dict[str, Any]:
    """JSON schema for ``response_format``; strict-mode compatible (all keys required, no extras)."""
    return {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["scale_up", "scale_down", "hold"]},
            "target_replicas": {"type": "integer", "minimum": 0, "maximum": max_replicas},
            "confidence": {"type": "number", "enum": CONFIDENCE_GRID},
            "reason": {"type": "string", "maxLength": REASON_WIRE_MAX},
        },
        "required": ["action", "target_replicas", "confidence", "reason"],
        "additionalProperties": False,
    }


class InvalidAnswer(ValueError):
    """The model's text is not a usable proposal; ``str()`` is what the repair prompt shows it."""


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``: the whole text, a fenced block, or an object inside prose."""
    stripped = text.strip()
    try:
        value = json.loads(stripped)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, m.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise InvalidAnswer("no JSON object found in the answer")


def parse_answer(text: str | None, current: int) -> tuple[LLMAnswer, str | None]:
    """Validate the model's text as a proposal for a service now at ``current`` replicas.

    Returns the answer and, when it had to be reconciled, a note saying how. An action that
    contradicts the target ("hold" next to another number, "scale_down" to more replicas) is read
    as hold: a contradictory answer never moves replicas, and holding is always allowed.
    """
    if not text or not text.strip():
        raise InvalidAnswer("the answer was empty")
    data = extract_json(text)
    try:
        answer = LLMAnswer.model_validate(data)
    except ValidationError as e:
        raise InvalidAnswer("; ".join(_short(err) for err in e.errors())) from None
    implied = "scale_up" if answer.target_replicas > current else "scale_down" if answer.target_replicas < current else "hold"
    if answer.action != implied:
        note = f"action {answer.action!r} contradicts target_replicas {answer.target_replicas} (current {current}): holding"
        return answer.model_copy(update={"action": "hold", "target_replicas": current}), note
    return answer, None


def _short(err: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in err.get("loc", ())) or "answer"
    return f"{where}: {err.get('msg', 'invalid')} (got {str(err.get('input'))[:40]!r})"


# --------------------------------------------------------------------------- tools


class ToolContext(Protocol):
    """What the tools may read (the daemon implements it over its service loops, the simulator over its state)."""

    def queue_metrics(self, service: str) -> dict[str, float]: ...  # latest observations

    def service_status(self, service: str) -> dict[str, Any]: ...  # replicas running/desired/failed, health

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]: ...  # newest last, log-record dicts

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]: ...


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str


class _RecentArgs(_Args):
    n: Annotated[int, BeforeValidator(_int_like), Field(ge=1, le=20)] = 5


class _HistoryArgs(_Args):
    metric: str
    minutes: float = Field(default=10.0, gt=0, le=60)


#: a history answer longer than this is thinned, so one tool result cannot flood the context
HISTORY_MAX_POINTS = 30


def tool_specs(service: str, metrics: Iterable[str] = (), only: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """OpenAI function definitions. ``service`` is an enum of one and ``metric`` an enum of the
    metrics observed, so grammar-constrained servers can only ask for what exists; the enums are
    also what keeps the tool list short in the prompt."""
    names = sorted(set(metrics)) or ["queue.backlog"]
    svc = {"type": "string", "enum": [service]}

    def fn(name: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
        # Extra keys are checked by pydantic when the call runs (the error goes back to the
        # model); leaving additionalProperties out keeps the prompt small. Integer ranges stay:
        # grammar-constrained servers then only generate valid arguments.
        return {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": {"service": svc, **props}, "required": ["service", *props]},
            },
        }

    specs = [
        fn("get_queue_metrics", "Latest queue metrics", {}),
        fn("get_service_status", "Replica counts and health", {}),
        fn("get_recent_decisions", "Last n decisions", {"n": {"type": "integer", "minimum": 1, "maximum": 20}}),
        fn("get_metric_history", "[age_s,value] pairs",
           {"metric": {"type": "string", "enum": names}, "minutes": {"type": "integer", "minimum": 1, "maximum": 60}}),
    ]
    wanted = None if only is None else set(only)
    return [s for s in specs if wanted is None or s["function"]["name"] in wanted]


ToolFn = Callable[[ToolContext, Any, float], Any]


def _history(tools: ToolContext, a: _HistoryArgs, now: float) -> Any:
    if a.metric not in tools.queue_metrics(a.service):
        raise InvalidAnswer(f"unknown metric {a.metric!r}: not observed for this service")
    points = tools.metric_history(a.service, a.metric, a.minutes)
    if len(points) > HISTORY_MAX_POINTS:
        stride = math.ceil(len(points) / HISTORY_MAX_POINTS)
        points = points[::-1][::stride][::-1]
    return [[round(now - t, 1), round_sig(v)] for t, v in points]


_TOOLS: dict[str, tuple[type[_Args], ToolFn]] = {
    "get_queue_metrics": (_Args, lambda t, a, now: rounded(t.queue_metrics(a.service))),
    "get_service_status": (_Args, lambda t, a, now: t.service_status(a.service)),
    "get_recent_decisions": (_RecentArgs, lambda t, a, now: [compact_record(r) for r in t.recent_decisions(a.service, a.n)]),
    "get_metric_history": (_HistoryArgs, _history),
}


def run_tool(name: str, arguments: str | None, service: str, tools: ToolContext, now: float) -> tuple[str, str | None]:
    """Execute one tool call. Returns (JSON text for the ``tool`` message, error or None).

    Errors go back to the model as ``{"error": ...}`` so it can correct itself; nothing it sends
    reaches the daemon except these read-only lookups, and only for the service under decision.
    """
    try:
        if name not in _TOOLS:
            raise InvalidAnswer(f"unknown tool {name!r}; available: {', '.join(_TOOLS)}")
        model, fn = _TOOLS[name]
        try:
            raw = json.loads(arguments or "{}")
        except ValueError:
            raise InvalidAnswer("arguments are not valid JSON") from None
        if not isinstance(raw, dict):
            raise InvalidAnswer("arguments must be a JSON object")
        try:
            args = model.model_validate(raw)
        except ValidationError as e:
            raise InvalidAnswer("; ".join(_short(err) for err in e.errors())) from None
        if args.service != service:
            raise InvalidAnswer(f"only service {service!r} may be queried")
        result = fn(tools, args, now)
    except InvalidAnswer as e:
        return json.dumps({"error": str(e)}), str(e)
    except Exception as e:  # a failing lookup is the model's missing data, not the daemon's crash
        msg = f"lookup failed: {type(e).__name__}"
        return json.dumps({"error": msg}), msg
    return json.dumps(result, default=str, separators=(",", ":")), None


# --------------------------------------------------------------------------- compact data


def round_sig(value: float, digits: int = 4) -> float | int:
    """Few significant digits: the prompt's size is paid for on every call."""
    if not math.isfinite(value) or value == 0:
        return value
    rounded_value = round(value, max(0, digits - 1 - int(math.floor(math.log10(abs(value))))))
    return int(rounded_value) if float(rounded_value).is_integer() else rounded_value


def rounded(metrics: Mapping[str, float]) -> dict[str, float | int]:
    return {k: round_sig(float(v)) for k, v in sorted(metrics.items())}


#: decision-log keys the model sees; strings are cut short because they may carry anything
_RECORD_KEYS = ("ts", "decision", "current_replicas", "target_replicas", "source", "executed", "reason")


def compact_record(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _RECORD_KEYS:
        if key in record:
            value = record[key]
            out[key] = _one_line(value)[:80] if isinstance(value, str) else value
    outcome = record.get("outcome")
    if isinstance(outcome, Mapping) and "status" in outcome:
        out["outcome"] = outcome["status"]
    return out
