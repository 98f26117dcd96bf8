"""Benchmark of the LLM advisor: ``python -m benchmarks.llm_latency [--decisions N] [--timeout S]``.

Prints decision latency (p50/p99) against a real llama.cpp peer (xllamacpp in-process, serving
../shared/llm-peer/tiny-hermes.gguf) and against an endpoint that never answers (the bound is
``timeout + 50 ms``), prompt tokens per decision, and the share of ticks that call the LLM under
steady load and under a burst, driving :meth:`Advisor.advise` with plans from
:func:`docktor.agent.core.decide.plan` and advancing state with :func:`docktor.agent.core.state.remember`.
Needs the test extras (xllamacpp).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from typing import Any

from docktor.agent.advisor.advisor import Advisor
from docktor.agent.advisor.gate import llm_envelope
from docktor.agent.advisor.prompt import SYSTEM_PROMPT, build_prompt
from docktor.agent.advisor.protocol import tool_specs
from docktor.agent.config.model import LLMConfig, Rule, Rules, ServiceConfig
from docktor.agent.core.decide import conclude, plan, remember
from docktor.agent.core.state import ServiceState
from tests.support.peers import LLM_MODEL as MODEL
from tests.support.peers import serve_llama

#: the tiny model's context is 2048 byte-level tokens: two tools fit (see tests/advisor/test_advisor_llama.py)
TOOLS = ["get_queue_metrics", "get_metric_history"]
BOUND_MS = 50.0


class Tools:
    """A ToolContext over the simulated service's state."""

    def __init__(self, state: ServiceState):
        self.state = state

    def queue_metrics(self, service: str) -> dict[str, float]:
        return dict(self.state.history[-1][1]) if self.state.history else {}

    def service_status(self, service: str) -> dict[str, Any]:
        return {"available": True}

    def recent_decisions(self, service: str, n: int) -> list[dict[str, Any]]:
        return []

    def metric_history(self, service: str, metric: str, minutes: float) -> list[tuple[float, float]]:
        return [(t, obs[metric]) for t, obs in self.state.history if metric in obs]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def service(policy: str = "rules") -> ServiceConfig:
    """``rules``: the share of ticks asking is about the rules' direction gate, whatever the default
    policy. ``target`` (300 per replica): at 900-939 queued on 3 replicas it holds at 3 (inside the
    HPA's 10 % tolerance) while the scale-up rule fires, so an answer has room (3..5) and every
    decision asks. Under ``rules`` a scale-up is its step limit: no answer could change it, and
    no model is asked."""
    return ServiceConfig(
        name="worker",
        policy=policy,
        target_per_replica=300 if policy == "target" else None,
        min_replicas=1,
        max_replicas=20,
        scale_up_by=2,
        cooldown_up=15,
        cooldown_down=60,
        scale_down_stabilization=60,
        rules=Rules(
            scale_up_when=[Rule(metric="queue.backlog_per_replica", op=">", value=100)],
            scale_down_when=[Rule(metric="queue.backlog_per_replica", op="<", value=20)],
        ),
    )


async def decisions(base_url: str, n: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """n decisions that all ask (a scale-up rule fires each time, and the answer has room)."""
    svc = service("target")
    advisor = Advisor(LLMConfig(provider="dmr", base_url=base_url, **cfg), env={})
    lat, prompt, completion, requests, sources = [], [], [], [], Counter()
    try:
        for i in range(n):
            state = ServiceState()
            state.history.append((999.0, {"queue.backlog": 900.0 + i, "replicas.running": 3.0}))
            p = plan(svc, {"queue.backlog": 900.0 + i, "queue.rate_in": 30.0, "replicas.running": 3.0}, 3, state, 1000.0)
            advisor.reset()  # every decision asks: no breaker, no reuse between samples
            t0 = time.perf_counter()
            advice = await advisor.advise(svc, p, state, Tools(state), 1000.0)
            lat.append((time.perf_counter() - t0) * 1000)
            conclude(svc, p, advice)
            rec = advice.record or {}
            sources[advice.source] += 1
            prompt.append(rec.get("prompt_tokens", 0))
            completion.append(rec.get("completion_tokens", 0))
            requests.append(rec.get("requests", 0))
    finally:
        await advisor.close()
    return {"lat": lat, "prompt": prompt, "completion": completion, "requests": requests, "sources": sources}


async def hanging(n: int, timeout: float) -> list[float]:
    """n decisions against a server that accepts and never answers."""
    held: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        held.append((task, writer))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            writer.close()

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    svc = service("target")
    advisor = Advisor(LLMConfig(provider="openai-compatible", base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout=timeout), env={})
    lat = []
    try:
        for _ in range(n):
            p = plan(svc, {"queue.backlog": 900.0, "queue.rate_in": 30.0, "replicas.running": 3.0}, 3, ServiceState(), 1000.0)
            advisor.reset()  # the breaker would (rightly) stop asking a hung endpoint after one timeout
            t0 = time.perf_counter()
            advice = await advisor.advise(svc, p, ServiceState(), Tools(ServiceState()), 1000.0)
            lat.append((time.perf_counter() - t0) * 1000)
            assert advice.source == "fallback", advice
    finally:
        await advisor.close()
        server.close()
        for task, _ in held:
            task.cancel()
        await asyncio.gather(*(t for t, _ in held), return_exceptions=True)
    return lat


async def share_of_ticks(base_url: str, pattern: str, may_act: bool, ticks: int = 120, tick_s: float = 5.0) -> tuple[int, Counter[str]]:
    """Run ``ticks`` decisions at ``tick_s`` spacing; count the ticks that called the LLM."""
    rng = random.Random(7)
    svc = service()
    cfg = LLMConfig(provider="dmr", base_url=base_url, max_tokens=200, max_tool_rounds=1, tools=TOOLS, may_act_without_rules=may_act)
    advisor = Advisor(cfg, env={})
    state, current, asked, why = ServiceState(), 4, 0, Counter()
    try:
        for i in range(ticks):
            now = 1000.0 + i * tick_s
            per_replica = 50.0 if pattern == "steady" or not (30 <= i < 60) else 400.0
            backlog = max(0.0, per_replica * current * rng.uniform(0.92, 1.08))
            obs = {"queue.backlog": backlog, "queue.rate_in": 40.0 * rng.uniform(0.92, 1.08), "replicas.running": float(current)}
            p = plan(svc, obs, current, state, now)
            advice = await advisor.advise(svc, p, state, Tools(state), now)
            d = conclude(svc, p, advice)
            rec = advice.record or {}
            if rec.get("asked"):
                asked += 1
            why[_kind(rec.get("why", ""), bool(rec.get("asked")))] += 1
            remember(state, d, now, acted=d.changes, observations=p.observations)
            current = d.target
    finally:
        await advisor.close()
    return asked, why


def _kind(why: str, asked: bool) -> str:
    for prefix in ("scale-up rule", "scale-down rules", "policy proposes", "first decision", "heartbeat", "envelope allows only", "nothing changed"):
        if why.startswith(prefix):
            return prefix
    return "observations moved" if asked else why[:30]


def prompt_chars() -> int:
    """Size of the first request's text with every tool offered (what a full-featured call sends)."""
    svc = service("target")
    state = ServiceState()
    for i in range(5):
        state.history.append((990.0 + i, {"queue.backlog": 900.0, "queue.rate_in": 30.0, "replicas.running": 3.0}))
    p = plan(svc, {"queue.backlog": 900.0, "queue.rate_in": 30.0, "replicas.running": 3.0}, 3, state, 1000.0)
    env = llm_envelope(svc, p, state, 1000.0, False)
    recent = [{"ts": "2026-01-01T00:00:00Z", "decision": "hold", "current_replicas": 3, "target_replicas": 3,
               "source": "llm", "executed": False, "reason": "queue.backlog_per_replica 95 <= 100"}] * 3
    user = build_prompt(svc, p, state, env, recent, 1000.0)
    return len(SYSTEM_PROMPT) + len(user) + len(json.dumps(tool_specs(svc.name, p.observations)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.llm_latency", description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=40, help="decisions per latency run (default 40)")
    ap.add_argument("--timeout", type=float, default=0.5, help="llm.timeout for the hanging endpoint, s (default 0.5)")
    args = ap.parse_args(argv)
    if args.decisions < 2 or args.timeout <= 0:
        print("error: --decisions must be >= 2 and --timeout > 0", file=sys.stderr)
        return 2
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        print("error: xllamacpp is not installed (pip install -e .[test])", file=sys.stderr)
        return 2
    if not MODEL.is_file():
        print(f"error: model file missing: {MODEL}", file=sys.stderr)
        return 2
    server, base_url = serve_llama(MODEL)
    try:
        return asyncio.run(_run(base_url, args))
    finally:
        del server


async def _run(base_url: str, args: argparse.Namespace) -> int:
    n = args.decisions
    print(f"LLM advisor benchmark: {n} decisions per run; real peer llama.cpp (xllamacpp) serving {MODEL.name} at {base_url}")
    for label, cfg in [
        ("1 tool round (2 tools)", dict(max_tokens=200, max_tool_rounds=1, tools=TOOLS, timeout=30)),
        ("no tools", dict(max_tokens=200, max_tool_rounds=0, timeout=30)),
    ]:
        await decisions(base_url, 2, cfg)  # warm-up: first requests fill llama.cpp's prompt cache
        r = await decisions(base_url, n, cfg)
        print(
            f"  real peer, {label}: latency p50 {pct(r['lat'], 50):.0f} ms, p99 {pct(r['lat'], 99):.0f} ms; "
            f"prompt tokens/decision mean {statistics.mean(r['prompt']):.0f} (p50 {pct(r['prompt'], 50):.0f}); "
            f"completion tokens mean {statistics.mean(r['completion']):.0f}; requests/decision mean {statistics.mean(r['requests']):.1f}; "
            f"sources {dict(r['sources'])}"
        )
    print(f"  first request with all four tools: {prompt_chars()} characters of system + user + tool definitions")
    lat = await hanging(n, args.timeout)
    worst = max(lat) - args.timeout * 1000
    ok = worst <= BOUND_MS
    print(
        f"  hanging endpoint, timeout {args.timeout * 1000:.0f} ms: latency p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
        f"max {max(lat):.1f} ms (overshoot {worst:.1f} ms; bound {BOUND_MS:.0f} ms: {'PASS' if ok else 'FAIL'})"
    )
    for may_act in (False, True):
        for pattern in ("steady", "burst"):
            asked, why = await share_of_ticks(base_url, pattern, may_act)
            top = ", ".join(f"{k}: {v}" for k, v in why.most_common())
            print(f"  share of ticks asking, {pattern:6} load, may_act_without_rules={str(may_act).lower():5}: {asked}/120 = {asked / 120:.0%} ({top})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
