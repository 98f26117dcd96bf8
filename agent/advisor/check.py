"""Is an LLM endpoint usable by the advisor, and what does it support? (``docktor llm check``)

Lists the models at the endpoint, says whether the configured one is there, reads what the server
says about itself (context size, tool support: llama.cpp ``/props``, Ollama ``/api/show``, vLLM's
model list), whether the advisor's prompt fits that context, then tries one structured answer
(JSON schema, else JSON mode, else plain text) and one tool call, exactly as the advisor would
make them. The tool call is skipped when the server says its chat template has no tool support,
and otherwise bounded by :data:`TOOL_CHECK_S`, so a model that stalls on tools is found out in
seconds. Exit 0: usable; 1: not usable; 2: bad input.
"""

from __future__ import annotations

import time
from typing import Any

import openai

from docktor.agent.advisor.advisor import FORMATS
from docktor.agent.advisor.capabilities import count_tokens, estimate_tokens, probe
from docktor.agent.advisor.client import Endpoint, LLMClient, describe_error
from docktor.agent.advisor.prompt import CONTEXT_MARGIN, SYSTEM_PROMPT
from docktor.agent.advisor.protocol import InvalidAnswer, answer_schema, parse_answer, run_tool, tool_specs
from docktor.agent.config.model import LLMConfig

#: seconds the tool-call check may take at most: enough for a working model to call a tool
#: with a short answer, far less than a stalled one would cost every decision
TOOL_CHECK_S = 10.0

CHECK_SERVICE = "check"
CHECK_PROMPT = (
    '{"service":"check","current":2,"bounds":[1,4],"allowed":[1,4],'
    '"observations":{"queue.backlog":450,"queue.rate_in":30,"replicas.running":2}}'
)


class _SampleTools:
    """Answers the check's tool call with fixed numbers; nothing real is queried."""

    def queue_metrics(self, service: str) -> dict[str, float]:
        return {"queue.backlog": 450.0, "queue.rate_in": 30.0}

    def service_status(self, service: str) -> dict[str, Any]:
        return {"desired": 2, "running": 2, "failed": 0, "healthy": True}

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        return []

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        return [(0.0, 450.0)]


def _ms(t0: float) -> str:
    return f"{(time.monotonic() - t0) * 1000:.0f} ms"


async def run_check(llm: LLMConfig, endpoint: Endpoint) -> tuple[list[str], bool]:
    """The report lines and whether the endpoint is usable by the advisor."""
    client = LLMClient(endpoint, llm.timeout)
    lines = [f"endpoint: {endpoint.base_url} (provider {endpoint.provider}, model {endpoint.model})"]
    usable = True
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": CHECK_PROMPT}]
    try:
        t0 = time.monotonic()
        try:
            models = await client.models(llm.timeout)
        except Exception as e:
            lines.append(f"models: cannot list ({describe_error(e, client)})")
            return lines, False
        lines.append(f"models: {', '.join(models) or '(none)'} ({_ms(t0)})")
        if endpoint.model in models:
            lines.append(f"model {endpoint.model}: available")
        else:
            lines.append(f"model {endpoint.model}: NOT listed at this endpoint")
            usable = False

        t0 = time.monotonic()
        info = await probe(client.raw, endpoint.base_url, endpoint.model)
        lines.append(f"server: {info.describe()} ({_ms(t0)})")
        if info.n_ctx:
            wanted = tool_specs(CHECK_SERVICE, ["queue.backlog", "queue.rate_in"], llm.tools) if llm.max_tool_rounds > 0 and info.tools is not False else []
            sample = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": CHECK_PROMPT}]
            counted = await count_tokens(client.raw, info, sample, wanted)
            tokens = counted if counted is not None else estimate_tokens(sample, wanted, 3.0)
            room = info.n_ctx - llm.max_tokens - CONTEXT_MARGIN
            what = f"with {len(wanted)} tools" if wanted else "without tools"
            verdict = "fits" if tokens <= room else "does not fit: the advisor drops history, then tools, to fit"
            lines.append(f"prompt: a short decision prompt {what} is {tokens} tokens ({'counted' if counted is not None else 'estimated'}); "
                         f"context {info.n_ctx} - max_tokens {llm.max_tokens} leaves {room}: {verdict}")

        structured = None
        for fmt in FORMATS:
            kwargs: dict[str, Any] = {}
            if fmt == "json_schema":
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "scaling_proposal", "schema": answer_schema(4), "strict": True},
                }
            elif fmt == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            t0 = time.monotonic()
            try:
                resp = await client.chat(time.monotonic() + llm.timeout, messages=messages, max_tokens=llm.max_tokens,
                                         temperature=llm.temperature, **kwargs)
                parse_answer(resp.choices[0].message.content, current=2)
                structured = fmt
                lines.append(f"structured output: {fmt} ok ({_ms(t0)}, {resp.usage.prompt_tokens if resp.usage else '?'} prompt tokens)")
                break
            except InvalidAnswer as e:
                lines.append(f"structured output: {fmt} answered, but invalid: {e}")
            except openai.BadRequestError as e:
                lines.append(f"structured output: {fmt} not supported ({describe_error(e, client)})")
            except Exception as e:
                lines.append(f"structured output: {fmt} failed ({describe_error(e, client)})")
                break
        if structured is None:
            usable = False

        if info.tools is False:
            lines.append(f"tool calling: not supported by the server's chat template ({info.said}); "
                         "the advisor offers this model no tools")
            return lines, usable
        t0 = time.monotonic()
        bound = min(llm.timeout, TOOL_CHECK_S)
        try:
            resp = await client.chat(time.monotonic() + bound, messages=messages, max_tokens=llm.max_tokens,
                                     temperature=llm.temperature, tools=tool_specs(CHECK_SERVICE, ["queue.backlog"]),
                                     tool_choice="auto")
            calls = resp.choices[0].message.tool_calls or []
            if not calls:
                lines.append(f"tool calling: the model answered without calling a tool ({_ms(t0)}); the advisor still works")
            else:
                results = [run_tool(c.function.name, c.function.arguments, CHECK_SERVICE, _SampleTools(), 0.0) for c in calls]
                bad = [err for _, err in results if err]
                names = ", ".join(c.function.name for c in calls)
                if bad:
                    lines.append(f"tool calling: supported, but the call was invalid ({names}: {bad[0]})")
                else:
                    lines.append(f"tool calling: ok, called {names} ({_ms(t0)})")
        except (TimeoutError, openai.APITimeoutError):
            lines.append(f"tool calling: no answer within {bound:g} s with a tool offered; set llm.max_tool_rounds: 0")
        except Exception as e:
            lines.append(f"tool calling: not supported ({describe_error(e, client)}); set llm.max_tool_rounds: 0")
    finally:
        await client.close()
    return lines, usable
