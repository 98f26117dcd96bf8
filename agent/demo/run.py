"""``docktor demo``: the whole pipeline on one machine, with a real NATS JetStream and real workers.

Starts ``nats-server`` on a free loopback port, a producer at 100 msg/s with 10 s bursts of
500 msg/s every 60 s (the Go Docktor example's load), and a consumer service run by the local
executor whose replicas each handle about 60 msg/s, so the base load needs about 2 replicas and a
burst about 9. The daemon scales the consumer with the ``docktor`` policy (the fewest replicas
that start every message within 10 s), the Go Docktor example's rules as guardrails; a live
view shows what it sees.

The consumer replica itself is :mod:`docktor.agent.demo.worker`.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from docktor.agent.demo.nats_server import NatsServer
from docktor.agent.problems import UsageError

if TYPE_CHECKING:
    from docktor.agent.runtime.decision_log import DecisionRecord
    from docktor.agent.runtime.supervisor import Supervisor

STREAM, SUBJECT, CONSUMER = "DEMO", "demo.work", "WORKERS"
BASE_RATE, BURST_RATE = 100, 500
BURST_EVERY, BURST_FOR, FIRST_BURST_AT = 60.0, 10.0, 25.0
#: the consumer's bounds, and what the base load needs (each replica handles about 60 msg/s)
MAX_REPLICAS = 10
BASE_REPLICAS = 2
#: the live view's width in characters, whatever the terminal's
VIEW_WIDTH = 100


def rate_at(t: float) -> int:
    """Messages per second the producer sends at second ``t`` of the demo."""
    if t >= FIRST_BURST_AT and (t - FIRST_BURST_AT) % BURST_EVERY < BURST_FOR:
        return BURST_RATE
    return BASE_RATE


def demo_config(url: str, state_dir: Path) -> str:
    """The docktor.yaml the demo runs: the docktor policy on a local-executor consumer, with the
    Go Docktor example's rules as guardrails (no scale-in while one fires, none unless both
    down rules hold)."""
    from docktor.agent.demo.worker import PROCESS_TIME_S

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
    max_replicas: {MAX_REPLICAS}
    check_interval: 2s
    policy: docktor
    target_wait: 10s
    startup_delay: 2s              # a local replica: a Python process connecting to NATS
    processing_time: {PROCESS_TIME_S * 1000:g}ms
    queue: {{kind: nats, url: "{url}", stream: {STREAM}, consumer: {CONSUMER}}}
    rules:
      scale_up_when:
        - {{metric: queue.backlog, op: ">", value: 500}}
        - {{metric: queue.rate_in, op: ">", value: 200}}
      scale_down_when:
        - {{metric: queue.backlog, op: "<=", value: 100}}
        - {{metric: queue.rate_in, op: "<", value: 150}}
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
    from docktor.agent.runtime.process import Paths
    from docktor.agent.runtime.supervisor import Supervisor

    tmp = Path(tempfile.mkdtemp(prefix="docktor-demo-"))
    state = (state_dir or tmp / "state").resolve()
    state.mkdir(parents=True, exist_ok=True)
    try:
        server = NatsServer.start(tmp / "js", own_group=True)  # Ctrl-C: clients first, then the server
    except RuntimeError as e:
        raise UsageError(f"cannot start the demo's nats-server: {e}") from None
    url = server.url
    config_path = state / "demo.yaml"
    config_path.write_text(demo_config(url, state))
    config = parse_config(config_path.read_text(), config_path)
    paths = Paths(state)
    console.print(f"[bold]Docktor demo[/]: nats-server on {url}, decisions in {paths.decisions}")

    async def main() -> Summary:
        await _setup_stream(url)  # the server is healthy: this connects at the first try
        stop = asyncio.Event()
        daemon = Supervisor(config, log_path=paths.decisions)
        summary = Summary()
        live_view = console.is_terminal

        def on_record(rec: DecisionRecord) -> None:
            summary.add(rec)
            if not live_view and rec.executed:  # piped: one plain line per action instead of the live view
                console.print(f"{rec.ts[11:19]}  {rec.decision} {rec.current_replicas} -> {rec.target_replicas}: {rec.reason}",
                              markup=False, highlight=False)

        daemon.on_record.append(on_record)
        await daemon.open()
        started = time.monotonic()
        tasks = [asyncio.create_task(_produce(url, stop, started)), asyncio.create_task(daemon.run(stop))]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def until_done(live: Live | None) -> None:
            while not stop.is_set():
                elapsed = time.monotonic() - started
                if elapsed >= duration:
                    stop.set()
                    break
                if live is not None:
                    live.update(_view(daemon, summary, elapsed, duration))
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except TimeoutError:
                    pass

        try:
            if live_view:
                with Live(_view(daemon, summary, 0.0, duration), console=console, refresh_per_second=4) as live:
                    await until_done(live)
            else:
                await until_done(None)
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await daemon.close()
        return summary

    try:
        summary = asyncio.run(main())
    finally:
        server.stop()
        shutil.rmtree(tmp / "js", ignore_errors=True)
    console.print(summary.text(), markup=False, highlight=False)
    console.print(f"Every decision: {paths.decisions}  (docktor daemon logs --config {config_path})", markup=False, highlight=False)
    return 0


@dataclass
class Summary:
    """What the demo did, for the live view and the closing line."""

    ups: int = 0
    downs: int = 0
    holds: int = 0
    peak_replicas: int = 0
    peak_backlog: int = 0
    final_replicas: int = 0
    #: replicas after each decision, newest last, for the sparkline
    history: deque[int] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))

    def add(self, rec: DecisionRecord) -> None:
        if rec.executed and rec.decision == "scale_up":
            self.ups += 1
        elif rec.executed and rec.decision == "scale_down":
            self.downs += 1
        else:
            self.holds += 1
        replicas = rec.target_replicas if rec.executed else rec.current_replicas
        if replicas is not None:
            self.final_replicas = replicas
            self.peak_replicas = max(self.peak_replicas, replicas)
            self.history.append(replicas)
        self.peak_backlog = max(self.peak_backlog, int(rec.observations.get("queue.backlog", 0.0)))

    def text(self) -> str:
        return (
            f"Summary: {self.ups} scale-up(s), {self.downs} scale-down(s), {self.holds} hold(s); "
            f"peak {self.peak_replicas} replicas, peak backlog {self.peak_backlog}; "
            f"ended at {self.final_replicas} replica(s) (the base load needs about {BASE_REPLICAS})."
        )


SPARK = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 40


def sparkline(values: Iterable[int], top: int) -> str:
    """One block character per value, scaled to ``top`` (the service's max_replicas)."""
    return "".join(SPARK[min(len(SPARK) - 1, round((len(SPARK) - 1) * v / max(1, top)))] for v in values)


def _view(daemon: Supervisor, summary: Summary, elapsed: float, duration: float) -> Group:
    # Fixed widths so the view does not jump as numbers and reasons change length.
    table = Table(expand=False, width=VIEW_WIDTH)
    for name, width in (("service", 9), ("in/s", 5), ("out/s", 5), ("backlog", 7), ("replicas", 8)):
        table.add_column(name, width=width, no_wrap=True, justify="left" if name == "service" else "right")
    table.add_column("last decision", ratio=1, no_wrap=True, overflow="ellipsis")
    for name, r in daemon.loops.items():
        o = r.last_observations
        rec = r.last_record

        def fmt(key: str, o: dict[str, float] = o) -> str:
            return f"{o[key]:.0f}" if key in o else "-"

        running = str(r.last_status.running) if r.last_status else "?"
        last = "-" if rec is None else f"{rec.decision} {rec.current_replicas}->{rec.target_replicas}: {rec.reason}"
        table.add_row(name, fmt("queue.rate_in"), fmt("queue.rate_out"), fmt("queue.backlog"), running, last)
    load = rate_at(elapsed)
    head = f"t={elapsed:4.0f}s of {duration:.0f}s   producer {load:3d} msg/s{'  (burst)' if load == BURST_RATE else '         '}"
    spark = f"replicas  {sparkline(summary.history, MAX_REPLICAS):<{SPARK_POINTS}}  now {summary.final_replicas}"
    return Group(Panel(f"{head}\n{spark}", title="docktor demo", width=VIEW_WIDTH), table)
