"""What the LLM server says about itself: its context size, whether it can call tools, its tokenizer.

Asked once per endpoint, each question with a short timeout, through the same client (and key)
as the chat requests. Servers answer in their own ways:

* **llama.cpp** (and Docker Model Runner, which runs it): ``GET {root}/props`` has
  ``default_generation_settings.n_ctx`` (the context of one slot) and ``chat_template_caps``
  (``supports_tools``); ``POST {root}/apply-template`` and ``{root}/tokenize`` count a prompt's
  tokens exactly, tools included;
* **Ollama**: ``POST {root}/api/show`` has ``capabilities`` (``tools``) and the model's context;
  the context used is ``num_ctx`` from its ``parameters`` when set, else Ollama's default;
* **vLLM**: ``GET {base}/models`` lists ``max_model_len`` per model.

Anything else (OpenAI) tells nothing: the prompt is then sent as built, and a context-overflow
error is met by one retry with the minimal prompt (:mod:`docktor.agent.advisor.advisor`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: Ollama's own default context (``num_ctx``) when the model's parameters do not set one
OLLAMA_DEFAULT_CTX = 2048
#: seconds for each question; a server that does not know one answers 404 at once
PROBE_TIMEOUT = 2.0


@dataclass
class ServerInfo:
    kind: str = "unknown"  # llama.cpp | ollama | vllm | unknown
    n_ctx: int | None = None
    #: whether the server's chat template handles tools; None: it did not say
    tools: bool | None = None
    #: llama.cpp's /apply-template and /tokenize answered: prompts can be counted exactly
    tokenizer: bool = False
    root: str = ""
    said: str = ""  # where the figures came from, for messages

    def describe(self) -> str:
        ctx = f"context {self.n_ctx} tokens" if self.n_ctx else "context unknown"
        tools = {True: "tools supported", False: "no tool support", None: "tool support unknown"}[self.tools]
        return f"{self.kind}: {ctx}, {tools}" + (f" ({self.said})" if self.said else "")


def server_root(base_url: str) -> str:
    """``http://host:8080/engines/llama.cpp/v1`` -> ``http://host:8080/engines/llama.cpp``."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


async def probe(client: Any, base_url: str, model: str, timeout: float = PROBE_TIMEOUT) -> ServerInfo:
    """Ask the server (an ``AsyncOpenAI``) what it is; never raises."""
    root = server_root(base_url)
    info = ServerInfo(root=root)
    props = await _ask(client.get(f"{root}/props", cast_to=object, options={"timeout": timeout}))
    if isinstance(props, dict) and isinstance(props.get("default_generation_settings"), dict):
        info.kind, info.said = "llama.cpp", "llama.cpp /props"
        n_ctx = props["default_generation_settings"].get("n_ctx")
        info.n_ctx = int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None
        caps = props.get("chat_template_caps")
        if isinstance(caps, dict) and "supports_tools" in caps:
            info.tools = bool(caps["supports_tools"])
        counted = await _ask(client.post(f"{root}/tokenize", body={"content": "x"}, cast_to=object, options={"timeout": timeout}))
        info.tokenizer = isinstance(counted, dict) and isinstance(counted.get("tokens"), list)
        return info
    show = await _ask(client.post(f"{root}/api/show", body={"model": model}, cast_to=object, options={"timeout": timeout}))
    if isinstance(show, dict) and ("model_info" in show or "capabilities" in show):
        info.kind, info.said = "ollama", "Ollama /api/show"
        caps = show.get("capabilities")
        if isinstance(caps, list):
            info.tools = "tools" in caps
        params = str(show.get("parameters") or "")
        m = re.search(r"(?m)^\s*num_ctx\s+(\d+)", params)
        trained = next((v for k, v in (show.get("model_info") or {}).items() if k.endswith(".context_length")), None)
        info.n_ctx = int(m.group(1)) if m else (min(OLLAMA_DEFAULT_CTX, trained) if isinstance(trained, int) else OLLAMA_DEFAULT_CTX)
        return info
    models = await _ask(client.get(f"{base_url.rstrip('/')}/models", cast_to=object, options={"timeout": timeout}))
    if isinstance(models, dict):
        for m in models.get("data") or []:
            if isinstance(m, dict) and m.get("id") == model and isinstance(m.get("max_model_len"), int):
                info.kind, info.said, info.n_ctx = "vllm", "vLLM /v1/models max_model_len", m["max_model_len"]
    return info


async def count_tokens(client: Any, info: ServerInfo, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                       timeout: float = PROBE_TIMEOUT) -> int | None:
    """The prompt's tokens as the server will count them (llama.cpp), or None when it cannot say."""
    if not info.tokenizer:
        return None
    body: dict[str, Any] = {"messages": messages}
    if tools:
        body["tools"] = tools
    rendered = await _ask(client.post(f"{info.root}/apply-template", body=body, cast_to=object, options={"timeout": timeout}))
    if not isinstance(rendered, dict) or not isinstance(rendered.get("prompt"), str):
        return None
    counted = await _ask(client.post(f"{info.root}/tokenize", body={"content": rendered["prompt"]}, cast_to=object,
                                     options={"timeout": timeout}))
    if isinstance(counted, dict) and isinstance(counted.get("tokens"), list):
        return len(counted["tokens"])
    return None


def estimate_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]], chars_per_token: float) -> int:
    """A count from characters, for servers without a tokenizer endpoint (the ratio is learned from
    the ``usage`` of earlier answers); per message a few tokens of template."""
    chars = sum(len(str(m.get("content") or "")) + len(json.dumps(m.get("tool_calls") or "")) for m in messages)
    chars += len(json.dumps(tools)) if tools else 0
    return int(chars / max(chars_per_token, 0.5)) + 8 * len(messages)


def is_context_overflow(e: BaseException) -> bool:
    """HTTP 400 because the prompt is longer than the context (llama.cpp, OpenAI, vLLM wordings)."""
    said = str(getattr(e, "message", "") or e).lower()
    return "context" in said and any(w in said for w in ("exceed", "maximum", "too long", "too many", "length"))


async def _ask(call: Any) -> Any:
    try:
        return await call
    except (TimeoutError, Exception):
        return None
