"""The pydantic models of ``docktor.yaml``, as the rest of Docktor sees them after loading.

A service's executor and sources are plugins: their settings are each plugin's own ``Settings``
model, validated by :mod:`docktor.agent.config.load` and attached here as :class:`ExecutorSpec`
and :class:`SourceSpec`. Everything else is the decision core's: bounds, the policy, the rules,
step limits, cooldowns and stabilization.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from docktor.agent.config.headroom_setting import NO_HEADROOM, Headroom
from docktor.tools.sdk import SECRET_ERROR, EnvName, PluginSettings, PositiveSeconds, Seconds


class Strict(BaseModel):
    # no infinities or NaNs anywhere in a config: `.inf` is valid YAML for a float, and a step of
    # `.inf` percent passed validation only to crash every decision (math.ceil(inf))
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
ToolName = Literal["get_queue_metrics", "get_service_status", "get_recent_decisions", "get_metric_history"]


#: the variables Compose injects for a service's ``models: [llm]`` (short syntax; the key upper-cased)
COMPOSE_ENDPOINT_VAR = "LLM_URL"
COMPOSE_MODEL_VAR = "LLM_MODEL"


class LLMConfig(Strict):
    """The LLM advisor. ``provider: none`` (the default) means rules and policy only.

    ``from: compose``: the endpoint (and the model, unless ``model`` is set) are read from the
    variables Compose injects into a service that declares ``models:`` (:mod:`.compose_file`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    #: ``compose``: the endpoint comes from ``endpoint_var`` (declared before ``base_url``, which checks it)
    from_: Literal["compose"] | None = Field(default=None, alias="from")
    provider: Provider = "none"
    base_url: str | None = None
    model: str | None = None
    #: the variables holding the endpoint and the model name (Compose's long syntax names them;
    #: default: the short syntax's for a model called ``llm``; in a Compose file, what it declares)
    endpoint_var: EnvName | None = None
    model_var: EnvName | None = None
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
    tools: list[ToolName] | None = None
    #: how far the LLM may go above the deterministic count (the current one when that holds):
    #: the larger of these replicas and this percentage of it, rounded up. The advisor only ever
    #: adds capacity to the deterministic decision; this bounds what a wrong answer can cost.
    max_extra_replicas: int = Field(default=2, ge=0)
    max_extra_percent: float = Field(default=50.0, ge=0)  # finite: Strict refuses .inf and .nan

    @model_validator(mode="before")
    @classmethod
    def _compose_is_openai_compatible(cls, data: Any) -> Any:
        # Docker Model Runner's endpoint, as Compose injects it, is an OpenAI-compatible /v1
        if isinstance(data, dict) and data.get("from") == "compose" and "provider" not in data:
            data = {**data, "provider": "openai-compatible"}
        return data

    @field_validator("base_url")
    @classmethod
    def _one_endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("from_") == "compose":
            raise ValueError("from: compose reads the endpoint from the environment Compose sets; remove base_url or from")
        return value

    def endpoint_vars(self) -> tuple[str, str]:
        return self.endpoint_var or COMPOSE_ENDPOINT_VAR, self.model_var or COMPOSE_MODEL_VAR


# --------------------------------------------------------------------------- plugins


@dataclass(frozen=True)
class ExecutorSpec:
    """The service's executor: its kind and that plugin's validated settings."""

    kind: str
    settings: PluginSettings
    #: where the settings were written, for messages: ``services[0]`` (flat) or ``services[0].executor``
    where: str = ""


FallbackAction = Literal["hold", "fixed", "current-if-higher"]


class OnMissing(Strict):
    """What a source's long outage means (KEDA's ``fallback``): after ``after`` failed reads in a
    row, while metrics the service needs are missing.

    ``hold`` (the default): the HPA rule alone: scale up if the metrics still read call for it,
    never scale in. ``fixed``: go to ``replicas`` (the one way missing data may scale in: you
    asked for it). ``current-if-higher``: at least ``replicas``, never fewer than now.
    Written as a mapping, or a string: ``hold``, ``fixed 4``, ``current-if-higher 6``.
    """

    action: FallbackAction = "hold"
    replicas: int | None = Field(default=None, ge=0)
    #: failed reads in a row before the fallback applies (KEDA's failureThreshold)
    after: int = Field(default=3, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            words = data.split()
            if not words or len(words) > 2:
                raise ValueError(f"{data!r}: write hold, fixed N or current-if-higher N (or a mapping with action, replicas, after)")
            out: dict[str, Any] = {"action": words[0]}
            if len(words) == 2:
                out["replicas"] = words[1]
            return out
        return data

    @model_validator(mode="after")
    def _replicas_when_needed(self) -> OnMissing:
        if self.action != "hold" and self.replicas is None:
            raise ValueError(f"{self.action} needs a replica count, e.g. '{self.action} 4'")
        if self.action == "hold" and self.replicas is not None:
            raise ValueError("hold takes no replica count")
        return self

    def text(self) -> str:
        return self.action if self.action == "hold" else f"{self.action} {self.replicas}"


@dataclass(frozen=True)
class SourceSpec:
    """One metric source of a service."""

    name: str
    kind: str
    settings: PluginSettings
    #: the first source is the service's queue: its metrics keep their names; others are prefixed
    primary: bool = True
    where: str = ""
    #: what a long outage of this source means (``on_missing:`` in its block)
    on_missing: OnMissing = field(default_factory=OnMissing)

    def metric_name(self, metric: str) -> str:
        return metric if self.primary else f"{self.name}.{metric}"


# --------------------------------------------------------------------------- services

Policy = Literal["rules", "target", "docktor"]

#: Guardrail defaults per policy, applied to keys the service leaves unset. Threshold rules move
#: by small fixed steps with cooldowns (the Go Docktor's +2/-1). ``target`` follows its count like
#: HPA's default behavior: up by the larger of 4 replicas and 100 % per tick, down by at most
#: half, after a 60 s stabilization window and 30 s cooldown. ``docktor`` plans its count over the
#: start-up delay from deadlines, so the guardrails leave it room: up to 10x per tick (a check
#: interval long against the SLO must catch up in one step) and scale-in as soon as the plan
#: allows (at most half per tick); a stabilization window would only keep replicas the deadlines
#: do not need (docs/benchmarks.md measures both).
_TARGET_DEFAULTS: dict[str, Any] = {
    "scale_up_by": 4, "scale_up_percent": 100, "scale_down_by": 1, "scale_down_percent": 50,
    "cooldown_up": 0, "cooldown_down": 30, "scale_down_stabilization": 60,
}
_DOCKTOR_DEFAULTS: dict[str, Any] = {
    "scale_up_by": 4, "scale_up_percent": 900, "scale_down_by": 1, "scale_down_percent": 50,
    "cooldown_up": 0, "cooldown_down": 0, "scale_down_stabilization": 0,
}
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "rules": {"scale_up_by": 2, "scale_down_by": 1, "cooldown_up": 15, "cooldown_down": 60, "scale_down_stabilization": 60},
    "target": _TARGET_DEFAULTS,
    "docktor": _DOCKTOR_DEFAULTS,
}

#: The step limits of each direction. A service that sets any of a direction's limits sets that
#: direction's whole step policy: the policy's defaults for it are dropped, as HPA's
#: ``behavior.scaleUp.policies`` replaces its default policies (``scale_up_by: 4`` under
#: ``policy: target`` caps a scale-up at +4; the default ``scale_up_percent: 100`` no longer lets
#: 6 become 12). A limit left out of a set direction stays None: no such limit.
STEP_LIMITS: dict[str, tuple[str, str]] = {
    "up": ("scale_up_by", "scale_up_percent"),
    "down": ("scale_down_by", "scale_down_percent"),
}


class ServiceConfig(Strict):
    """One scaled service. ``executor`` and ``sources`` are set by the loader from the plugins."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    check_interval: PositiveSeconds = 10.0

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
    #: spare capacity added to a sizing policy's count before the guardrails (core/headroom.py)
    headroom: Headroom = NO_HEADROOM
    #: docktor policy: the measured queue.oldest_age corrects the throughput it sizes with (core/feedback.py)
    closed_loop: bool = True

    # Step limits and cooldowns. Unset ones take the defaults of the service's policy
    # (POLICY_DEFAULTS): threshold rules step slowly, sizing policies may jump like HPA does.
    # A direction whose step limits the user sets takes none of the defaults (STEP_LIMITS); None:
    # no such limit (a step is then the other one, and always at least one replica).
    scale_up_by: int | None = Field(default=None, ge=1)
    scale_down_by: int | None = Field(default=None, ge=1)
    #: optional percent steps; the larger of replicas and percent wins (HPA selectPolicy: Max)
    scale_up_percent: float | None = Field(default=None, gt=0, le=1_000_000)
    scale_down_percent: float | None = Field(default=None, gt=0, le=100)
    cooldown_up: Seconds = 15.0
    cooldown_down: Seconds = 60.0
    #: scale down only to the highest recommendation of this trailing window (HPA stabilization)
    scale_down_stabilization: Seconds = 60.0

    # Set by the loader from the plugins; never written in the file under these names.
    executor: ExecutorSpec | None = Field(default=None, exclude=True)
    sources: tuple[SourceSpec, ...] = Field(default=(), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _policy_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            policy = data.get("policy", cls.model_fields["policy"].default)
            defaults = dict(POLICY_DEFAULTS.get(policy, {}) if isinstance(policy, str) else {})
            for keys in STEP_LIMITS.values():
                if any(data.get(key) is not None for key in keys):  # the user's limits replace the defaults
                    for key in keys:
                        defaults.pop(key, None)
            if any(key not in data for key in defaults):
                data = {**defaults, **data}
        return data

    @model_validator(mode="after")
    def _a_step_each_way(self) -> ServiceConfig:
        for direction, keys in STEP_LIMITS.items():
            if all(getattr(self, key) is None for key in keys):
                raise ValueError(f"{keys[0]}: no step limit for scaling {direction}: set {keys[0]} or {keys[1]}")
        return self

    def rule_metrics(self) -> set[str]:
        return {r.metric for r in self.rules.scale_up_when + self.rules.scale_down_when}


class LogConfig(Strict):
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    backups: int = Field(default=5, ge=0)


#: where ``/metrics`` listens when ``metrics.listen`` gives a bare port
DEFAULT_METRICS_HOST = "127.0.0.1"


class MetricsConfig(Strict):
    """``/metrics`` for Prometheus: off unless ``listen`` is set; loopback unless ``allow_remote``."""

    #: serve on an address other hosts can reach (declared before ``listen``, which checks it)
    allow_remote: bool = False
    #: ``host:port`` (``127.0.0.1:9464``, ``[::1]:9464``), or a bare port on 127.0.0.1
    listen: str | None = None

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        host, port = split_listen(str(value))
        if not info.data.get("allow_remote", False) and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(
                "not a loopback address: metrics would be served beyond this host "
                "(set metrics.allow_remote: true if that is what you want)"
            )
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def host(self) -> str:
        assert self.listen is not None
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        assert self.listen is not None
        return split_listen(self.listen)[1]


def split_listen(text: str, *, example: str = "127.0.0.1:9464", lowest_port: int = 1) -> tuple[str, int]:
    """``host:port`` -> (IP address, port). A bare port means 127.0.0.1, ``:port`` every address
    (Prometheus's own convention), ``localhost`` 127.0.0.1; other host names are refused, since
    what they resolve to decides who can reach the endpoint. ``metrics.listen`` and ``docktor mcp
    --http`` (where port 0 means any free port) read addresses the same way."""
    text = text.strip()
    if text.isdigit():
        host, port_text = DEFAULT_METRICS_HOST, text
    else:
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text)
        if m is None:
            raise ValueError(f"must be host:port, e.g. {example} or [::1]:{example.rsplit(':', 1)[1]}")
        host = m.group(1) or m.group(3) or ""
        port_text = m.group(2) or m.group(4)
        host = {"": "0.0.0.0", "localhost": DEFAULT_METRICS_HOST}.get(host, host)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"the host must be an IP address or localhost, e.g. {example}") from None
    port = int(port_text)
    if not lowest_port <= port <= 65535:
        what = "0 (any free port)" if lowest_port == 0 else str(lowest_port)
        raise ValueError(f"the port must be between {what} and 65535")
    return host, port


#: where ``docktor mcp --http`` reads its bearer token first: the NAME of the variable holding it
DEFAULT_MCP_TOKEN_ENV = "DOCKTOR_MCP_TOKEN"
#: the token file's name in ``state_dir`` when ``mcp.token_file`` is not set
DEFAULT_MCP_TOKEN_FILE = "mcp.token"
#: the SDK's rule for a setting that names an environment variable (``password_env`` ...)
_ENV_NAME = TypeAdapter(EnvName)


class McpConfig(Strict):
    """``docktor mcp``: what an assistant connected over MCP may do (docs/operations.md, "MCP").

    The switches are off by default and take a YAML boolean only (a string such as ``"no"`` is
    refused, not read as true): reading is always allowed, acting is the operator's decision.
    Over HTTP every request carries a bearer token (:mod:`docktor.agent.mcp.auth`), since the
    port, unlike the daemon's socket, is open to every local user."""

    #: offer ``apply_scale``: scale through the daemon, inside the guardrails' envelope, recorded
    #: with source ``mcp`` and the caller's reason (declared before ``http_auth``, which checks it)
    allow_apply: bool = Field(default=False, strict=True)
    #: let ``docktor mcp --http`` listen on an address that is not loopback
    allow_remote: bool = Field(default=False, strict=True)
    #: ``token``: every HTTP request needs ``Authorization: Bearer <token>``; ``none``: no check,
    #: for read-only tools behind a trusted authenticating proxy (refused with ``allow_apply``)
    http_auth: Literal["token", "none"] = "token"
    #: the NAME of the environment variable holding the token (never the token itself)
    token_env: str = DEFAULT_MCP_TOKEN_ENV
    #: the token's file when the variable is unset (default ``<state_dir>/mcp.token``; relative
    #: to the config's folder); created 0600 with a random token when absent
    token_file: Path | None = None

    @field_validator("http_auth")
    @classmethod
    def _no_unauthenticated_apply(cls, value: str, info: ValidationInfo) -> str:
        if value == "none" and info.data.get("allow_apply", False):
            raise ValueError(
                "none serves the MCP tools over HTTP to anyone who reaches the port, and allow_apply is true: "
                "any local user could scale; use http_auth: token (the default) or set allow_apply: false"
            )
        return value

    @field_validator("token_env", mode="before")
    @classmethod
    def _a_name_not_the_token(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                _ENV_NAME.validate_python(value)
            except ValidationError:
                # of the type the loader never echoes: someone may have pasted the token itself here
                raise PydanticCustomError(
                    SECRET_ERROR, "must be the name of an environment variable (the token itself goes in the environment)"
                ) from None
        return value


class DocktorConfig(Strict):
    version: str | int | None = None
    mode: Literal["autonomous", "advisory"] = "autonomous"
    state_dir: Path | None = None
    llm: LLMConfig = Field(default_factory=LLMConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    mcp: McpConfig = Field(default_factory=McpConfig)
    services: list[ServiceConfig] = Field(min_length=1)

    # Filled in by the loader.
    path: Path | None = Field(default=None, exclude=True)
    warnings: tuple[str, ...] = Field(default=(), exclude=True)
    #: the file is a Compose file whose x-docktor blocks are this config
    from_compose: bool = Field(default=False, exclude=True)

    @property
    def base_dir(self) -> Path:
        return (self.path.parent if self.path else Path.cwd()).resolve()

    def service(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)
