"""The LLM advisor: asks a model for a replica count, inside the guardrails, within a time budget.

The deterministic side (rules, policy, guardrails) has already produced a :class:`~docktor.agent.core.decide.Plan`
with its envelope. The advisor narrows that envelope by the LLM's direction rule, decides whether
asking is worth it this tick, and if so runs a short conversation (tool calls, one structured
answer, at most one repair). Whatever happens, :meth:`Advisor.advise` returns within
``llm.timeout`` and never raises: a failing model yields ``source="fallback"`` and the
deterministic proposal, with the error recorded. After a failed call a per-service circuit
breaker keeps the advisor from asking that service's LLM again until a back-off has passed, so a
down or hanging endpoint does not cost every tick its whole timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import openai

from docktor.agent.advisor.capabilities import ServerInfo, count_tokens, estimate_tokens, is_context_overflow, probe
from docktor.agent.advisor.client import Endpoint, LLMClient, describe_error, resolve_endpoint
from docktor.agent.advisor.gate import Memory, ask_reason, breaker_backoff, breaker_open, llm_envelope
from docktor.agent.advisor.prompt import CONTEXT_MARGIN, RECENT_DECISIONS, SYSTEM_PROMPT, build_prompt, minimal_prompt
from docktor.agent.advisor.protocol import (
    InvalidAnswer,
    LLMAnswer,
    ToolContext,
    answer_schema,
    parse_answer,
    run_tool,
    tool_specs,
)
from docktor.agent.config.model import LLMConfig, ServiceConfig
from docktor.agent.core.decide import Advice, Allowance, Plan, Proposer, deterministic_source
from docktor.agent.core.guardrails import Envelope
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState
from docktor.agent.timestamps import rfc3339

# --------------------------------------------------------------------------- the advisor

#: response_format variants, best first; a server that rejects one is not offered it again
FORMATS = ("json_schema", "json_object", "text")


class Refused(Exception):
    pass


class Advisor:
    def __init__(self, config: LLMConfig, *, env: Mapping[str, str] | None = None):
        self.config = config
        self.endpoint: Endpoint = resolve_endpoint(config, os.environ if env is None else env)
        self.client = LLMClient(self.endpoint, config.timeout)
        self.format = FORMATS[0]
        self._memory: dict[str, Memory] = {}
        self._server: ServerInfo | None = None
        self._probing = asyncio.Lock()
        self._chars_per_token = 3.0  # until the server's usage figures say otherwise
        #: how far above the deterministic target an answer may go (applied by ``conclude``)
        self.allowance = Allowance.of(config)

    def retune(self, config: LLMConfig) -> None:
        """Take ``config``'s allowance, asking rules and prompt budget from the next decision on.
        Only for a config that reaches the same endpoint the same way (the client is kept)."""
        self.config = config
        self.allowance = Allowance.of(config)

    async def server_info(self) -> ServerInfo:
        """What the server says about its context and tools, asked once (``server.probe``)."""
        async with self._probing:
            if self._server is None:
                self._server = await probe(self.client.raw, self.endpoint.base_url, self.endpoint.model)
            return self._server

    async def advise(
        self, svc: ServiceConfig, plan: Plan, state: ServiceState, tools: ToolContext, now: float
    ) -> Advice:
        """Decide whether to ask and, if so, ask and wait (within ``llm.timeout``).

        The daemon does not wait: it calls :meth:`consider` on its tick and runs :meth:`call`
        beside the loop (``docktor.agent.runtime.beside``). The simulator and the benchmarks use this.
        """
        advice, env = self.consider(svc, plan, state, now)
        if env is None:
            return advice
        return await self.call(svc, plan, state, tools, now, env, advice.record)

    def consider(self, svc: ServiceConfig, plan: Plan, state: ServiceState, now: float) -> tuple[Advice, Envelope | None]:
        """What this tick gets without waiting, and whether to call the model.

        Returns the advice for now (the last answer reused, or none) and, when a call is worth
        making, the envelope to ask within (else None). Never raises, never waits.
        """
        record: dict[str, Any] = {"provider": self.endpoint.provider, "model": self.endpoint.model, "asked": False, "why": ""}
        deterministic: Proposer = deterministic_source(svc)
        try:
            env = llm_envelope(svc, plan, state, now, self.config.may_act_without_rules, self.allowance)
            record["envelope"] = [env.lo, env.hi]
            mem = self._memory.setdefault(svc.name, Memory())
            ask, why = ask_reason(self.config, plan, env, mem, now)
            record["why"] = why
            if ask and breaker_open(mem, now, svc.check_interval):
                assert mem.open_until is not None
                left = mem.open_until - now
                until = rfc3339(time.time() + left)
                record["why"] = (
                    f"circuit breaker open after {mem.failures} failed call{'s' if mem.failures > 1 else ''} "
                    f"(last: {mem.last_error}): not asking until {until} (in {left:.0f} s); would ask: {why}"
                )
                record["breaker"] = {"failures": mem.failures, "until": until, "last_error": mem.last_error}
                return Advice(None, deterministic, record), None
            if not ask:
                if mem.answer is None or env.lo == env.hi:
                    return Advice(None, deterministic, record), None
                # reuse: the last advice, clamped anew into this tick's envelope by finish()
                record.update(self._answer_fields(mem.answer), reused=True, latency_ms=0.0)
                return Advice(self._proposal(mem.answer, reused=True), "llm", record, env, self.allowance), None
            return Advice(None, deterministic, record), env
        except Exception as e:  # never raise: a bug here is a logged fallback, not a crashed tick
            record["error"] = describe_error(e, self.client)
            return Advice(None, "fallback", record), None

    async def call(
        self,
        svc: ServiceConfig,
        plan: Plan,
        state: ServiceState,
        tools: ToolContext,
        now: float,
        env: Envelope,
        considered: Mapping[str, Any] | None = None,
    ) -> Advice:
        """Ask the model about ``plan`` within ``env``; returns within ``llm.timeout``, never raises
        (a failed call is ``source: fallback`` with the error, and opens the breaker)."""
        started = time.monotonic()
        deadline = started + self.config.timeout
        record: dict[str, Any] = dict(considered or {"provider": self.endpoint.provider, "model": self.endpoint.model})
        record.update(
            asked=True, prompt_tokens=0, completion_tokens=0, requests=0, tool_calls=[], error=None,
            proposal=None, confidence=None,  # filled by a valid answer; null on a fallback
        )
        mem = self._memory.setdefault(svc.name, Memory())
        mem.asked_at, mem.observations, mem.answer = now, dict(plan.observations), None
        try:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    answer = await self._converse(svc, plan, state, env, tools, now, record, deadline)
            finally:
                record["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            mem.answer = answer
            if mem.failures:
                record["breaker_closed_after"] = mem.failures  # this call was the probe that succeeded
            mem.failures, mem.open_until, mem.last_error = 0, None, ""
            record.update(self._answer_fields(answer))
            return Advice(self._proposal(answer), "llm", record, env, self.allowance)
        except asyncio.CancelledError:
            # our own timeout surfaces as TimeoutError; a cancel from outside must propagate
            raise
        except Exception as e:  # never raise: every failure is a logged fallback
            record["error"] = describe_error(e, self.client)
            if record["error"] == "timeout" and record.get("retried"):
                record["error"] = f"timeout (retrying {record['retried'][-1]})"
            self._trip(svc, now + (time.monotonic() - started), record)
            return Advice(None, "fallback", record)

    def _trip(self, svc: ServiceConfig, ended: float, record: dict[str, Any]) -> None:
        """Open (or re-open, for longer) the service's breaker, counted from when the call ended:
        a call that hung for the whole timeout must not eat its own back-off."""
        mem = self._memory.setdefault(svc.name, Memory())
        mem.failures += 1
        backoff = breaker_backoff(mem.failures, svc.check_interval, self.config.heartbeat)
        mem.open_until = ended + backoff
        mem.last_error = str(record["error"])[:80]
        record["breaker"] = {"failures": mem.failures, "until": rfc3339(time.time() + backoff)}

    @staticmethod
    def _answer_fields(answer: LLMAnswer) -> dict[str, Any]:
        return {
            "proposal": answer.target_replicas,
            "action": answer.action,
            "confidence": answer.confidence,
            "reason": answer.reason,
        }

    @staticmethod
    def _proposal(answer: LLMAnswer, reused: bool = False) -> Proposal:
        why = answer.reason or "no reason given"
        return Proposal(answer.target_replicas, f"llm{' (reused)' if reused else ''}: {why}")

    async def _converse(
        self,
        svc: ServiceConfig,
        plan: Plan,
        state: ServiceState,
        env: Envelope,
        tools: ToolContext,
        now: float,
        record: dict[str, Any],
        deadline: float,
    ) -> LLMAnswer:
        """Fit the prompt to the model's context, then talk; after a context-overflow error, once
        more with the minimal prompt."""
        info = await self.server_info()
        try:
            recent = tools.recent_decisions(svc.name, RECENT_DECISIONS)
        except Exception:
            recent = []  # the prompt goes without; the model may still ask through the tool
        specs = tool_specs(svc.name, plan.observations, self.config.tools) if self.config.max_tool_rounds > 0 else []
        if specs and info.tools is False:
            # e.g. Gemma 3 under llama.cpp: offered tools, it answers slowly or not at all
            specs = []
            record["tools_off"] = f"the server's chat template has no tool support ({info.said})"
        short = build_prompt(svc, plan, state, env, [], now, history=False)
        variants: list[tuple[str, str, list[dict[str, Any]]]] = [
            ("full", build_prompt(svc, plan, state, env, recent, now), specs),
            ("no_history", short, specs),
            ("no_tools", short, []),
            ("minimal", minimal_prompt(svc, plan, env), []),
        ]
        name, user, offered = await self._fit([v for i, v in enumerate(variants) if i < 2 or not v[2] or i == 3], info, record)
        try:
            return await self._dialogue(svc, plan, env, tools, now, record, deadline, user, offered)
        except openai.BadRequestError as e:
            if name == "minimal" or not is_context_overflow(e):
                raise
            record["context_retry"] = f"{describe_error(e, self.client)}: retried once with the minimal prompt"
            record["prompt"] = {**record.get("prompt", {}), "variant": "minimal"}
            return await self._dialogue(svc, plan, env, tools, now, record, deadline, variants[-1][1], [])

    async def _fit(
        self, variants: list[tuple[str, str, list[dict[str, Any]]]], info: ServerInfo, record: dict[str, Any]
    ) -> tuple[str, str, list[dict[str, Any]]]:
        """The first variant (full, without history, without tools, minimal) whose prompt leaves
        room for ``max_tokens`` in the server's context; the last one when none does."""
        limit = None if info.n_ctx is None else info.n_ctx - self.config.max_tokens - CONTEXT_MARGIN
        seen: set[tuple[str, int]] = set()
        for i, (name, user, offered) in enumerate(variants):
            if (user, len(offered)) in seen:
                continue
            seen.add((user, len(offered)))
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
            if limit is None:
                record["prompt"] = {"variant": name, "n_ctx": None}
                return name, user, offered
            tokens = await count_tokens(self.client.raw, info, messages, offered)
            how = "counted" if tokens is not None else "estimated"
            if tokens is None:
                tokens = estimate_tokens(messages, offered, self._chars_per_token)
            if tokens <= limit or i == len(variants) - 1:
                record["prompt"] = {"variant": name, "tokens": tokens, "how": how, "n_ctx": info.n_ctx, "said": info.said}
                return name, user, offered
        raise AssertionError("unreachable: the last variant is always returned")

    async def _dialogue(
        self,
        svc: ServiceConfig,
        plan: Plan,
        env: Envelope,
        tools: ToolContext,
        now: float,
        record: dict[str, Any],
        deadline: float,
        user: str,
        specs: list[dict[str, Any]],
    ) -> LLMAnswer:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ]

        # 1. tool rounds: the model looks around, then may answer in text right away
        answered: Any = None
        for _ in range(self.config.max_tool_rounds if specs else 0):
            choice = await self._request(messages, record, deadline, tools=specs, tool_choice="auto")
            msg = choice.message
            if not msg.tool_calls:
                answered = choice
                break
            if choice.finish_reason == "length":
                # the arguments were cut off: running them is guesswork and servers reject such
                # a call in the history, so drop it and go straight to the structured answer
                record["tool_calls"].append({"name": msg.tool_calls[0].function.name, "error": "cut off (finish_reason=length)"})
                break
            messages.append(_assistant_with_calls(msg))
            for call in msg.tool_calls:
                name, args = call.function.name, call.function.arguments
                t0 = time.monotonic()
                content, error = run_tool(name, args, svc.name, tools, now)
                entry: dict[str, Any] = {"name": name, "arguments": _short_args(args), "ms": round((time.monotonic() - t0) * 1000, 1)}
                if error:
                    entry["error"] = error
                record["tool_calls"].append(entry)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        if answered is not None:
            try:
                return self._answer_from(answered, plan.current, record)
            except InvalidAnswer as e:
                # unconstrained text is not yet a failure: ask for the structured answer
                record["unstructured_error"] = str(e)
                messages.append({"role": "assistant", "content": (answered.message.content or "")[:500]})
                messages.append({"role": "user", "content": "Now give your decision as the JSON object only."})

        # 2. the structured answer, then at most one repair that shows the model its error
        first_error: str | None = None
        for attempt in range(2):
            choice = await self._structured(messages, record, deadline, svc)
            try:
                answer = self._answer_from(choice, plan.current, record)
            except InvalidAnswer as e:
                if attempt == 1:
                    raise InvalidAnswer(f"invalid answer after repair: {e} (first: {first_error})") from None
                first_error = str(e)
                record["repaired"] = True
                messages.append({"role": "assistant", "content": (choice.message.content or "")[:500]})
                messages.append({
                    "role": "user",
                    "content": f"That answer was invalid: {e}. Reply with only the JSON object, "
                    f"target_replicas an integer in [{env.lo}, {env.hi}], confidence 0..1, a short reason.",
                })
                continue
            return answer
        raise AssertionError("unreachable")

    def _answer_from(self, choice: Any, current: int, record: dict[str, Any]) -> LLMAnswer:
        """Parse one choice; a refusal ends the conversation, a cut-off answer says so."""
        msg = choice.message
        if getattr(msg, "refusal", None):
            raise Refused(f"model refused: {str(msg.refusal)[:120]}")
        try:
            answer, note = parse_answer(msg.content, current)
            if note:
                record["coerced"] = note
            return answer
        except InvalidAnswer:
            if choice.finish_reason == "length":
                raise InvalidAnswer(
                    f"the answer was cut off at max_tokens={self.config.max_tokens} (finish_reason=length)"
                ) from None
            raise

    async def _structured(
        self, messages: list[dict[str, Any]], record: dict[str, Any], deadline: float, svc: ServiceConfig
    ) -> Any:
        """A request for the answer, with the best response_format this server has accepted.

        No ``tools`` here: the history already holds the calls and results, and leaving the tool
        list out both ends the tool phase and saves its tokens (with tools listed, llama.cpp
        renders them into the prompt again even with ``tool_choice: none``).
        """
        while True:
            kwargs: dict[str, Any] = {}
            if self.format == "json_schema":
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "scaling_proposal", "schema": answer_schema(svc.max_replicas), "strict": True},
                }
            elif self.format == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            try:
                choice = await self._request(messages, record, deadline, **kwargs)
            except openai.BadRequestError as e:
                said = str(e).lower()
                if self.format != "text" and ("response_format" in said or "schema" in said or "json" in said):
                    self.format = FORMATS[FORMATS.index(self.format) + 1]
                    record["format_downgraded"] = self.format
                    continue
                raise
            record["format"] = self.format
            return choice

    async def _request(self, messages: list[dict[str, Any]], record: dict[str, Any], deadline: float, **kwargs: Any) -> Any:
        retried: list[str] = []
        try:
            response = await self.client.chat(
                deadline,
                retried,
                messages=messages,
                max_tokens=self.config.max_tokens,
                temperature=self.config.temperature,
                **kwargs,
            )
        finally:  # also when the call's own deadline cancels it mid-request
            if retried:
                record.setdefault("retried", []).extend(retried)
        record["requests"] += 1
        usage = getattr(response, "usage", None)
        if usage is not None:
            record["prompt_tokens"] += usage.prompt_tokens or 0
            record["completion_tokens"] += usage.completion_tokens or 0
            if usage.prompt_tokens:
                # learn this model's characters per token, for servers that cannot count for us
                chars = estimate_tokens(messages, kwargs.get("tools") or [], 1.0) - 8 * len(messages)
                self._chars_per_token = max(0.5, chars / usage.prompt_tokens)
        if not response.choices:
            raise InvalidAnswer("the response had no choices")
        return response.choices[0]

    def breaker_state(self, service: str) -> tuple[int, float | None, str]:
        """The service's circuit breaker: failed calls in a row, open until (the ``now`` clock), last error."""
        mem = self._memory.get(service)
        return (0, None, "") if mem is None else (mem.failures, mem.open_until, mem.last_error)

    def restore_breaker(self, service: str, failures: int, open_until: float | None, last_error: str) -> None:
        """A breaker saved by a previous daemon (``docktor.agent.runtime.persist``): a restart does
        not hammer an endpoint that was failing."""
        mem = self._memory.setdefault(service, Memory())
        mem.failures, mem.open_until, mem.last_error = failures, open_until, last_error

    def reset(self, service: str | None = None) -> None:
        """Forget the last call, its advice and the breaker (for one service, or all)."""
        if service is None:
            self._memory.clear()
        else:
            self._memory.pop(service, None)

    async def close(self) -> None:
        await self.client.close()


def _assistant_with_calls(msg: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": msg.content or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments or "{}"}}
            for c in msg.tool_calls
        ],
    }


def _short_args(arguments: str | None) -> Any:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return (arguments or "")[:80]
    text = json.dumps(value, default=str)
    return value if len(text) <= 200 else text[:200]


def make_advisor(config: LLMConfig, *, env: Mapping[str, str] | None = None) -> Advisor | None:
    """The advisor for ``config``, or None for ``provider: none``. Raises UsageError on a bad ``llm:`` block."""
    if config.provider == "none":
        return None
    return Advisor(config, env=env)


__all__ = ["Advisor", "make_advisor"]
