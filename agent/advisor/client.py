"""Where the LLM lives and how one request reaches it: provider defaults, the key, bounded retries.

The ``openai`` SDK speaks to every provider (Docker Model Runner, Ollama, OpenAI, any
OpenAI-compatible server). Its own retries are off; tenacity retries 429/5xx and refused
connections, but only while the caller's deadline leaves room. The key comes from the environment,
is held in one place and is scrubbed from every error text that leaves this module.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_before_delay, wait_exponential

from docktor.agent.config.model import DocktorConfig, LLMConfig
from docktor.agent.problems import Problem, UsageError
from docktor.agent.redact import redact, register

#: provider -> (base_url, model, environment variable holding the key)
PROVIDER_DEFAULTS: dict[str, tuple[str | None, str | None, str | None]] = {
    "dmr": ("http://localhost:12434/engines/llama.cpp/v1", "ai/llama3.2", None),
    "ollama": ("http://localhost:11434/v1", "llama3.2", None),
    "openai": ("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY"),
    "openai-compatible": (None, None, None),
}

#: attempts per request (first try included); each further one only if the deadline allows
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Endpoint:
    provider: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    #: where the endpoint and the model were found, for ``validate`` and ``llm check``
    found: str = "endpoint from llm.base_url, model from llm.model"

    def public(self) -> dict[str, str]:
        """What may be shown or logged: never the key (nor credentials in the URL)."""
        return {"provider": self.provider, "base_url": redact(self.base_url), "model": self.model}


def resolve_endpoint(config: LLMConfig, env: Mapping[str, str]) -> Endpoint:
    """Fill provider defaults and read the key. Raises :class:`UsageError` naming the field."""
    if config.provider == "none":
        raise UsageError([Problem("llm.provider", "is 'none': no LLM is configured")])
    base_default, model_default, key_default = PROVIDER_DEFAULTS[config.provider]
    problems: list[Problem] = []
    endpoint_var, model_var = config.endpoint_vars()
    env_url, env_model = _from_environment(config, env, problems)
    default = f"provider {config.provider}'s default"
    base_url = env_url or config.base_url or base_default
    url_from = endpoint_var if env_url else "llm.base_url" if config.base_url else default
    model = config.model or env_model or model_default
    model_from = "llm.model" if config.model else model_var if env_model else default
    compose = config.from_ == "compose"  # what it lacks, _from_environment has said
    if not base_url and not compose:
        problems.append(Problem("llm.base_url", f"required for provider {config.provider!r}"))
    elif base_url and not base_url.startswith(("http://", "https://")):
        where = f"llm.endpoint_var ({endpoint_var})" if env_url else "llm.base_url"
        problems.append(Problem(where, f"must start with http:// or https:// (got {base_url!r})"))
    if not model and not compose:
        problems.append(Problem("llm.model", f"required for provider {config.provider!r}"))
    key_env = config.api_key_env or key_default
    key = None
    if key_env:
        key = env.get(key_env) or None
        register(key)  # from here on, scrubbed from every message, record and log line
        if key is None:
            problems.append(Problem("llm.api_key_env", f"environment variable {key_env} is not set"))
    if problems:
        raise UsageError(problems)
    assert base_url and model
    found = ("Compose models: " if env_url else "") + f"endpoint from {url_from}, model from {model_from}"
    return Endpoint(config.provider, base_url.rstrip("/"), model, key, found)


def config_endpoint(config: DocktorConfig, env: Mapping[str, str]) -> Endpoint:
    """:func:`resolve_endpoint` for a loaded config: in a Compose file, the problems are named by
    their place in it (``compose.yaml: x-docktor.llm.from: ...``), as the loader's are."""
    try:
        return resolve_endpoint(config.llm, env)
    except UsageError as e:
        if not config.from_compose:
            raise
        from docktor.agent.config.compose_file import Paths

        where = Paths(str(config.path) if config.path else "compose.yaml", ())
        raise UsageError([where.problem(p) for p in e.problems]) from None


def _from_environment(config: LLMConfig, env: Mapping[str, str], problems: list[Problem]) -> tuple[str | None, str | None]:
    """The endpoint and model Compose injects for ``models:``, read when ``from: compose`` says so
    or when no ``base_url`` is written and the endpoint's variable is set: (url, model) or Nones."""
    endpoint_var, model_var = config.endpoint_vars()
    if config.base_url is not None:
        return None, None
    url = env.get(endpoint_var) or None
    model = env.get(model_var) or None
    if config.from_ == "compose":
        if url is None:
            problems.append(Problem("llm.from", f"compose: {endpoint_var} is not set (Compose sets it in a service that "
                                                "declares models:; another name: llm.endpoint_var)"))
        elif model is None and config.model is None:
            problems.append(Problem("llm.from", f"compose: {endpoint_var} is set but {model_var} is not "
                                                "(another name: llm.model_var; or set llm.model)"))
    return (url, model) if url is not None else (None, None)


def _retryable(e: BaseException) -> bool:
    if isinstance(e, openai.APITimeoutError):
        return False  # the deadline is spent; another try cannot fit
    return isinstance(e, openai.RateLimitError | openai.InternalServerError | openai.APIConnectionError)


class LLMClient:
    """One AsyncOpenAI client per endpoint, reused across decisions and services."""

    def __init__(self, endpoint: Endpoint, timeout: float):
        self.endpoint = endpoint
        # Local servers need no key, but the SDK insists on one; a placeholder is not a secret.
        self._client = AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key or "docktor", timeout=timeout, max_retries=0
        )

    async def chat(self, deadline: float, retried: list[str] | None = None, **kwargs: Any) -> Any:
        """One chat completion, retried on 429/5xx while ``deadline`` (monotonic) allows; each error
        retried (or cut short by the deadline) is described into ``retried``."""
        budget = deadline - time.monotonic()
        if budget <= 0:
            raise TimeoutError("no time left for a request")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(MAX_ATTEMPTS) | stop_before_delay(budget),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=1.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no time left for a request")
                    try:
                        return await self._client.chat.completions.create(
                            model=self.endpoint.model, timeout=left, **kwargs
                        )
                    except Exception as e:
                        if _retryable(e) and retried is not None:
                            retried.append(describe_error(e, self))
                        raise
        except Exception as e:
            # Whether the deadline falls during the last try or before it (tenacity will not start a
            # wait that ends past the budget) depends on the machine's speed: either way the
            # deadline, not the error, ended the call.
            if _retryable(e) and attempts < MAX_ATTEMPTS:
                raise TimeoutError("the deadline ended the retries") from e
            raise
        raise AssertionError("unreachable: tenacity reraises the last error")

    @property
    def raw(self) -> AsyncOpenAI:
        """The SDK client, for the server's own endpoints (``/props``, ``/tokenize``): same key, same transport."""
        return self._client

    async def models(self, timeout: float) -> list[str]:
        page = await self._client.models.list(timeout=timeout)
        return [m.id for m in page.data]

    def scrub(self, text: str) -> str:
        key = self.endpoint.api_key
        return redact(text.replace(key, "***") if key else text)

    async def close(self) -> None:
        await self._client.close()


def describe_error(e: BaseException, client: LLMClient | None = None) -> str:
    """One short line for the decision log; the key is scrubbed out."""
    if isinstance(e, TimeoutError | openai.APITimeoutError):
        text = "timeout"
    elif isinstance(e, openai.APIStatusError):
        body = str(getattr(e, "message", "") or "").strip().splitlines()
        text = f"HTTP {e.status_code}" + (f": {body[0][:160]}" if body else "")
    elif isinstance(e, openai.APIConnectionError):
        cause = e.__cause__
        text = f"connection failed: {type(cause).__name__ if cause else 'error'}"
    else:
        lines = str(e).strip().splitlines()
        text = f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__
    return client.scrub(text) if client else redact(text)
