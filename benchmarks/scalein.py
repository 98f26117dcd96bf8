"""Benchmark: scale-in with messages in flight, on every executor: messages lost and redelivered.

    python -m benchmarks.scalein [--executors local,compose,swarm] [--workers drain,ignore]
                                 [--scale-ins 24] [--rate 180] [--json]

For each executor and worker behaviour, a real NATS JetStream stream (work-queue retention) and
durable pull consumer, the example consumer (``examples/nats-multi/consumer/consumer.py``: fetch
10, 20 ms per message, ack each when done), and the executor's own ``scale()``:

* a publisher sends ``--rate`` messages per second for the whole run (each publish acknowledged
  by JetStream, so every published sequence number is known);
* the executor scales to 4 replicas, waits 2 s, scales in to 1, 2 or 3 (in turn), waits 1 s,
  and again: ``--scale-ins`` times, each with messages in flight (the consumer's ack-pending
  count just before each scale-in is reported);
* then publishing stops and the replicas drain what is left; the run waits until JetStream has
  no unacknowledged message for the consumer (bounded: three ack waits plus a minute).

Counted by JetStream itself, not by the workers:

* **lost**: published but never acknowledged, i.e. still in the work-queue stream at the end;
* **redelivered**: acknowledged messages whose final delivery was not the first (``deliveries >
  1`` in the server's ack advisories, ``$JS.EVENT.METRIC.CONSUMER.ACK.<stream>.<consumer>``, with
  the consumer's ``sample_freq`` set to 100 %): work done twice, or at least started twice.

Workers: ``drain`` is the example as shipped (on SIGTERM: stop fetching, finish and ack the
batch, exit); ``ignore`` ignores SIGTERM (killed at the end of the 10 s grace period); ``exit``
dies at once on SIGTERM without finishing its batch (what a worker without a handler does, when
it is not PID 1). The consumer's ack wait is 10 s, so an unacknowledged message is redelivered
10 s after its delivery.

Docker executors need ``DOCKER_HOST``. They run the examples' own files (compose:
``examples/nats-multi``, swarm: ``examples/nats-swarm``; the engine is turned into a swarm for the
run if it is not one, and left again if so), with the consumer image built from this checkout
under a tag of its own (``docktor-bench/nats-consumer:<hash of its folder>``): the example's tag
is shared with anything else building the examples on the same engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from docktor.tools.sdk import Context, Executor

REPO = Path(__file__).resolve().parents[1]
CONSUMER_PY = REPO / "examples" / "nats-multi" / "consumer" / "consumer.py"
STREAM, CONSUMER, SUBJECT = "EVENTS", "WEB_WORKERS", "events.web"
HIGH = 4
LOWS = (1, 2, 3)
ACK_WAIT_S = 10.0
GRACE_S = 10.0
HOLD_HIGH_S = 2.0
HOLD_LOW_S = 1.0


@dataclass
class Result:
    executor: str
    worker: str
    scale_ins: int = 0
    replicas_removed: int = 0
    killed: int = 0  # removed replicas that needed SIGKILL
    published: int = 0
    acked: int = 0
    lost: int = 0
    redelivered: int = 0
    max_deliveries: int = 0
    in_flight_at_scale_in: list[int] = field(default_factory=list)
    scale_in_ms: list[float] = field(default_factory=list)
    failed_scales: list[str] = field(default_factory=list)
    drain_s: float = 0.0
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        inflight = self.in_flight_at_scale_in
        return {
            "executor": self.executor, "worker": self.worker, "scale_ins": self.scale_ins,
            "replicas_removed": self.replicas_removed, "killed": self.killed,
            "in_flight_at_scale_in": f"{statistics.mean(inflight):.0f} (max {max(inflight)})" if inflight else "-",
            "scale_in_ms_p50": round(statistics.median(self.scale_in_ms)) if self.scale_in_ms else None,
            "published": self.published, "lost": self.lost, "redelivered": self.redelivered,
            "max_deliveries": self.max_deliveries, "failed_scales": len(self.failed_scales), "seconds": round(self.seconds),
        }


# --------------------------------------------------------------------------- the load and the count


async def prepare_queue(js: Any) -> None:
    """The stream and the consumer as the example makes them, with ack advisories for every ack."""
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], retention=RetentionPolicy.WORK_QUEUE))
    # create, or update the one a worker already made: same config plus sample_freq and our ack wait
    await js.add_consumer(STREAM, ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, filter_subject=SUBJECT, ack_wait=ACK_WAIT_S, sample_freq="100%",
    ))


async def measure(url: str, executor: Executor[Any], result: Result, *, scale_ins: int, rate: float,
                  log: Callable[[str], None] = lambda _: None) -> Result:
    """Run the load with ``scale_ins`` scale-ins through ``executor``; fill in ``result``."""
    began = time.monotonic()
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1)
    js = nc.jetstream(timeout=10)
    await prepare_queue(js)
    deliveries: dict[int, int] = {}

    async def on_ack(msg: Any) -> None:
        ack = json.loads(msg.data)
        deliveries[int(ack["stream_seq"])] = int(ack["deliveries"])

    await nc.subscribe(f"$JS.EVENT.METRIC.CONSUMER.ACK.{STREAM}.{CONSUMER}", cb=on_ack)
    published: set[int] = set()
    stop = asyncio.Event()

    async def publish() -> None:
        sent, start = 0, time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - start) * rate) - sent
            if due > 0:
                acks = await asyncio.gather(*(js.publish(SUBJECT, b'{"bench": "scalein"}') for _ in range(due)))
                published.update(a.seq for a in acks)
                sent += due
            await asyncio.sleep(0.02)

    async def tick() -> None:
        # the daemon asks for the status every check interval: the executors' CPU readings (which
        # replicas are idle) come from there
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await executor.status()
            await asyncio.sleep(1.0)

    publisher = asyncio.create_task(publish())
    ticker = asyncio.create_task(tick())
    try:
        up = await executor.scale(HIGH)
        if not up.ok:
            raise RuntimeError(f"cannot start {HIGH} replicas: {up.message}")
        for i in range(scale_ins):
            await asyncio.sleep(HOLD_HIGH_S)
            info = await js.consumer_info(STREAM, CONSUMER)
            result.in_flight_at_scale_in.append(int(info.num_ack_pending or 0))
            target = LOWS[i % len(LOWS)]
            down = await executor.scale(target)
            result.scale_ins += 1
            result.scale_in_ms.append(down.duration_ms)
            result.replicas_removed += len(down.removed)
            result.killed += sum(1 for r in down.removed if "SIGKILL" in r.stopped)
            if not down.ok:
                result.failed_scales.append(down.message)
            log(f"  scale-in {i + 1}/{scale_ins}: {HIGH} -> {target}, {result.in_flight_at_scale_in[-1]} in flight, "
                f"{down.duration_ms:.0f} ms: {down.message}")
            await asyncio.sleep(HOLD_LOW_S)
            up = await executor.scale(HIGH)
            if not up.ok:
                result.failed_scales.append(up.message)
    finally:
        stop.set()
        await publisher
        await ticker
    result.published = len(published)

    # drain: every message acknowledged, or the bound passes
    drain_began = time.monotonic()
    deadline = drain_began + 3 * ACK_WAIT_S + 60
    while time.monotonic() < deadline:
        info = await js.consumer_info(STREAM, CONSUMER)
        if not info.num_pending and not info.num_ack_pending:
            break
        await asyncio.sleep(0.5)
    await nc.flush()
    await asyncio.sleep(1.0)  # the last ack advisories
    result.drain_s = time.monotonic() - drain_began
    remaining = int((await js.stream_info(STREAM)).state.messages or 0)  # work queue: unacknowledged ones stay
    result.lost = remaining
    result.acked = len(published & deliveries.keys())
    result.redelivered = sum(1 for seq in published if deliveries.get(seq, 1) > 1)
    result.max_deliveries = max((deliveries.get(seq, 0) for seq in published), default=0)
    missed = result.published - remaining - result.acked
    if missed > 0:
        log(f"  note: {missed} ack advisories were not received (the lost figure is JetStream's own)")
    await nc.close()
    result.seconds = time.monotonic() - began
    return result


# --------------------------------------------------------------------------- the executors


def consumer_image() -> str:
    """The example consumer built from this checkout, under a tag naming its content."""
    import hashlib

    import docker

    folder = CONSUMER_PY.parent
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    tag = f"docktor-bench/nats-consumer:{digest.hexdigest()[:12]}"
    client = docker.from_env(timeout=900)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.images.build(path=str(folder), tag=tag, rm=True)
    finally:
        client.close()
    return tag


def example_copy(source: Path, target: Path, image: str, keep: set[str]) -> Path:
    """The example's Compose/stack file with only ``keep`` services and the consumer on ``image``."""
    import yaml

    doc = yaml.safe_load(source.read_text())
    doc["services"] = {name: svc for name, svc in doc["services"].items() if name in keep}
    # top-level configs (the Swarm example's docktor.yaml for its Docktor service) only for the kept
    # services that use them: a stack deploy reads every file named there
    if not any("configs" in svc for svc in doc["services"].values()):
        doc.pop("configs", None)
    doc["services"]["consumer"].pop("build", None)
    doc["services"]["consumer"].pop("depends_on", None)
    doc["services"]["consumer"]["image"] = image
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def worker_env(url: str, worker: str) -> dict[str, str]:
    return {"NATS_URL": url, "STREAM": STREAM, "CONSUMER": CONSUMER, "SUBJECT": SUBJECT,
            "PROCESS_TIME_MS": "20", "BATCH_SIZE": "10", "ON_SIGTERM": worker}


@contextlib.asynccontextmanager
async def local(worker: str, tmp: Path) -> AsyncIterator[tuple[str, Executor[Any]]]:
    from docktor.agent.demo.nats_server import NatsServer
    from docktor.tools.executors.local import LocalExecutor, LocalSettings

    server = NatsServer.start(tmp / "js")
    settings = LocalSettings(kind="local", command=[sys.executable, "-u", str(CONSUMER_PY)],
                             env=worker_env(server.url, worker), stop_grace_period=GRACE_S)
    ex = LocalExecutor(settings, Context("consumer", tmp, tmp / "state"))
    try:
        yield server.url, ex
    finally:
        await ex.close()
        server.stop()


@contextlib.asynccontextmanager
async def compose(worker: str, tmp: Path) -> AsyncIterator[tuple[str, Executor[Any]]]:
    from docktor.tools.executors.compose import ComposeExecutor, ComposeSettings
    from tests.support.peers import free_port, unique_project

    file = example_copy(REPO / "examples" / "nats-multi" / "docker-compose.yaml", tmp / "docker-compose.yaml",
                        await asyncio.to_thread(consumer_image), {"nats", "consumer"})
    project = unique_project("docktor-scalein")
    port, monitor = free_port(), free_port()
    settings = ComposeSettings(kind="compose", compose_file=file, project=project, compose_service="consumer")
    ex = ComposeExecutor(settings, Context("consumer", file.parent, tmp / "state"))
    # the executor runs `docker compose up`, which reads these from this process's environment
    with environ({"NATS_PORT": str(port), "NATS_MONITOR_PORT": str(monitor), "RATE": "0", "BURST_INTERVAL": "0",
                  "PROCESS_TIME_MS": "20", "BATCH_SIZE": "10", "ON_SIGTERM": worker}):
        async with _compose_project(ex, project, file, port) as url:
            yield url, ex


@contextlib.asynccontextmanager
async def _compose_project(ex: Executor[Any], project: str, file: Path, port: int) -> AsyncIterator[str]:
    from tests.support.peers import compose as compose_cli
    from tests.support.peers import down

    try:
        compose_cli(project, file, "up", "-d", "nats", timeout=300)
        url = f"nats://127.0.0.1:{port}"
        await wait_for_nats(url)
        yield url
    finally:
        await ex.close()
        down(project, file)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Any:
    """These variables set in this process's environment for a while, then as they were."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.asynccontextmanager
async def swarm(worker: str, tmp: Path) -> AsyncIterator[tuple[str, Executor[Any]]]:
    from docktor.tools.executors.swarm import SwarmExecutor, SwarmSettings
    from tests.support.peers import free_port
    from tests.support.swarm_peers import deploy_stack, remove_stack, swarm_session, unique_stack

    stack = unique_stack("dtk-scalein")
    port, monitor = free_port(), free_port()
    env = {"NATS_PORT": str(port), "NATS_MONITOR_PORT": str(monitor), "RATE": "0", "BURST_INTERVAL": "0",
           "PROCESS_TIME_MS": "20", "BATCH_SIZE": "10", "ON_SIGTERM": worker}
    with swarm_session():
        ex = SwarmExecutor(SwarmSettings(kind="swarm", stack=stack, service="consumer"), Context("consumer", tmp, tmp / "state"))
        try:
            file = example_copy(REPO / "examples" / "nats-swarm" / "stack.yaml", tmp / "stack.yaml",
                                await asyncio.to_thread(consumer_image), {"nats", "consumer"})
            deploy_stack(stack, file, env=env)
            url = f"nats://127.0.0.1:{port}"
            await wait_for_nats(url)
            yield url, ex
        finally:
            await ex.close()
            remove_stack(stack)


async def wait_for_nats(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
            await nc.jetstream().account_info()
            await nc.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"NATS at {url} never answered") from None
            await asyncio.sleep(0.5)


BACKENDS = {"local": local, "compose": compose, "swarm": swarm}


async def run_one(executor: str, worker: str, *, scale_ins: int, rate: float, log: Callable[[str], None]) -> Result:
    with tempfile.TemporaryDirectory(prefix="docktor-scalein-") as d:
        async with BACKENDS[executor](worker, Path(d)) as (url, ex):
            return await measure(url, ex, Result(executor, worker), scale_ins=scale_ins, rate=rate, log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scalein", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", default="local,compose,swarm")
    parser.add_argument("--workers", default="drain,ignore", help="drain, ignore, exit (comma-separated)")
    parser.add_argument("--scale-ins", type=int, default=24)
    parser.add_argument("--rate", type=float, default=180.0, help="messages per second published")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    results = []
    for executor in args.executors.split(","):
        for worker in args.workers.split(","):
            log(f"{executor} / {worker}:")
            result = asyncio.run(run_one(executor, worker, scale_ins=args.scale_ins, rate=args.rate, log=log))
            results.append(result)
            log(f"  -> {json.dumps(result.row())}")
    if args.json:
        print(json.dumps([asdict(r) | {"summary": r.row()} for r in results], indent=1))
    else:
        columns = list(results[0].row()) if results else []
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in results:
            print("| " + " | ".join(str(v) for v in r.row().values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
