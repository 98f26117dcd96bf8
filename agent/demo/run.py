"""``docktor demo``: the whole pipeline on one machine, with a real NATS JetStream and real workers.

Starts ``nats-server`` on a free loopback port, a producer at 100 msg/s with 10 s bursts of
500 msg/s every 60 s (the Go Docktor example's load), and a consumer service run by the local
executor whose replicas each handle about 60 msg/s, so the base load needs about 2 replicas and a
burst about 10. The daemon (rules only) scales the consumer; a live view shows what it sees.

The consumer replica itself is :mod:`docktor.agent.demo.worker`.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from docktor.agent.demo.nats_server import NatsServer
from docktor.agent.errors import UsageError

STREAM, SUBJECT, CONSUMER = "DEMO", "demo.work", "WORKERS"
BASE_RATE, BURST_RATE = 100, 500
BURST_EVERY, BURST_FOR, FIRST_BURST_AT = 60.0, 10.0, 25.0


def rate_at(t: float) -> int:
    """Messages per second the producer sends at second ``t`` of the demo."""
    if t >= FIRST_BURST_AT and (t - FIRST_BURST_AT) % BURST_EVERY < BURST_FOR:
        return BURST_RATE
    return BASE_RATE


def demo_config(url: str, state_dir: Path) -> str:
    """The docktor.yaml the demo runs: the Go Docktor example's rules on a local-executor consumer."""
    worker = [sys.executable, "-m", "docktor.agent.demo.worker", "--url", url, "--stream", STREAM, "--consumer", CONSUMER]
    command = "[" + ", ".join(f'"{a}"' for a in worker) + "]"
    return f"""
mode: autonomous
state_dir: {state_dir}
services:
  - name: consumer
    executor: local
    command: {command}
    stop_grace_period: 3s
    min_replicas: 1
    max_replicas: 10
    check_interval: 2s
    policy: rules
    queue: {{kind: nats, url: "{url}", stream: {STREAM}, consumer: {CONSUMER}}}
    rules:
      scale_up_when:
        - {{metric: queue.backlog, op: ">", value: 500}}
        - {{metric: queue.rate_in, op: ">", value: 200}}
      scale_down_when:
        - {{metric: queue.backlog, op: "<=", value: 100}}
        - {{metric: queue.rate_in, op: "<", value: 150}}
    scale_up_by: 2
    scale_down_by: 1
    cooldown_up: 4s
    cooldown_down: 10s
    scale_down_stabilization: 10s
"""


async def _setup_stream(url: str) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    nc = await nats.connect(url, connect_timeout=5)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    await nc.close()


async def _produce(url: str, stop: asyncio.Event, started: float) -> None:
    """Publish at rate_at(t), in 50 ms slices so bursts start and end on time."""
    import nats

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1)
    js = nc.jetstream()
    sent = 0
    try:
        while not stop.is_set():
            t = time.monotonic() - started
            due = int(sum_rate(t))
            for _ in range(max(0, due - sent)):
                await js.publish(SUBJECT, b"job", timeout=5)
                sent += 1
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


def sum_rate(t: float) -> float:
    """Messages due by time ``t``: the integral of rate_at, second by second."""
    whole = int(t)
    return sum(rate_at(s) for s in range(whole)) + rate_at(whole) * (t - whole)


def run_demo(*, duration: float, state_dir: Path | None, console: Console) -> int:
    from docktor.agent.config.load import parse_config
    from docktor.agent.runtime.daemon import Paths
    from docktor.agent.runtime.loop import Daemon

    tmp = Path(tempfile.mkdtemp(prefix="docktor-demo-"))
    state = (state_dir or tmp / "state").resolve()
    state.mkdir(parents=True, exist_ok=True)
    try:
        server = NatsServer.start(tmp / "js")
    except RuntimeError as e:
        raise UsageError(f"cannot start the demo's nats-server: {e}") from None
    url = server.url
    config_path = state / "demo.yaml"
    config_path.write_text(demo_config(url, state))
    config = parse_config(config_path.read_text(), config_path)
    paths = Paths(state)
    console.print(f"[bold]Docktor demo[/]: nats-server on {url}, decisions in {paths.decisions}")

    async def main() -> Counter[str]:
        await _setup_stream(url)  # the server is healthy: this connects at the first try
        stop = asyncio.Event()
        daemon = Daemon(config, log_path=paths.decisions)
        counts: Counter[str] = Counter()
        peaks: dict[str, float] = {"replicas": 0, "backlog": 0.0}

        def on_record(rec) -> None:  # type: ignore[no-untyped-def]
            counts[rec.decision if rec.executed else "hold"] += 1
            peaks["replicas"] = max(peaks["replicas"], rec.target_replicas or 0)
            peaks["backlog"] = max(peaks["backlog"], rec.observations.get("queue.backlog", 0.0))

        daemon.on_record.append(on_record)
        await daemon.open()
        started = time.monotonic()
        tasks = [asyncio.create_task(_produce(url, stop, started)), asyncio.create_task(daemon.run(stop))]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            with Live(_view(daemon, 0.0, duration), console=console, refresh_per_second=4, transient=False) as live:
                while not stop.is_set():
                    elapsed = time.monotonic() - started
                    if elapsed >= duration:
                        stop.set()
                        break
                    live.update(_view(daemon, elapsed, duration))
                    try:
                        await asyncio.wait_for(stop.wait(), 0.5)
                    except TimeoutError:
                        pass
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await daemon.close()
        counts["peak_replicas"] = int(peaks["replicas"])
        counts["peak_backlog"] = int(peaks["backlog"])
        return counts

    try:
        counts = asyncio.run(main())
    finally:
        server.stop()
        shutil.rmtree(tmp / "js", ignore_errors=True)
    console.print(
        f"[bold]Summary[/]: {counts['scale_up']} scale-up(s), {counts['scale_down']} scale-down(s), "
        f"{counts['hold']} hold(s); peak {counts['peak_replicas']} replicas, peak backlog {counts['peak_backlog']}."
    )
    console.print(f"Every decision: {paths.decisions}  (docktor daemon logs --config {config_path})")
    return 0


def _view(daemon, elapsed: float, duration: float) -> Group:  # type: ignore[no-untyped-def]
    table = Table("service", "rate in/s", "rate out/s", "backlog", "replicas", "last decision", "reason")
    for name, r in daemon.runners.items():
        o = r.last_observations
        rec = r.last_record
        running = r.last_status.running if r.last_status else "?"

        def fmt(key: str, o: dict[str, float] = o) -> str:
            return f"{o[key]:.0f}" if key in o else "-"

        last = "-" if rec is None else f"{rec.decision} {rec.current_replicas}->{rec.target_replicas}"
        table.add_row(name, fmt("queue.rate_in"), fmt("queue.rate_out"), fmt("queue.backlog"), str(running),
                      last, "" if rec is None else rec.reason)
    load = rate_at(elapsed)
    head = f"t={elapsed:5.0f}s / {duration:.0f}s   producer {load} msg/s{'  (burst)' if load == BURST_RATE else ''}"
    return Group(Panel(head, title="docktor demo"), table)
