"""Benchmark: what one `read()` of each source costs, side by side in one run.

    python -m benchmarks.sources [--reads 200] [--json]

Starts the real servers on loopback (nats-server; Debian's rabbitmq-server, redis-server,
prometheus, as the tests do), fills each with a queue in a known state, and times ``--reads``
sequential reads of each source after three warm-up reads: wall time per read (median, p95,
max) and the daemon process's CPU time per read. A read must stay well within a check interval
(5 s by default) and cost the daemon little CPU; these figures say by how much.

Queues: NATS 1000 messages, 200 in flight; RabbitMQ 1000 ready, 200 unacknowledged (management
API and AMQP-only mode); Redis a list of 1000, a Celery queue of 1000 waiting in 4 priority lists
plus 200 reserved (``unacked`` entries of 1 KB), a stream of 1000 entries with 200 pending;
Prometheus three queries over a scraped target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from docktor.tools.sdk import Source


async def measure(name: str, src: Source[Any], reads: int) -> dict[str, Any]:
    for _ in range(3):
        await src.read()
    walls: list[float] = []
    cpu0 = time.process_time()
    for _ in range(reads):
        t0 = time.perf_counter()
        await src.read()
        walls.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    await src.close()
    walls.sort()
    return {
        "source": name,
        "reads": reads,
        "median_ms": round(statistics.median(walls) * 1000, 2),
        "p95_ms": round(walls[int(0.95 * (len(walls) - 1))] * 1000, 2),
        "max_ms": round(walls[-1] * 1000, 2),
        "cpu_ms_per_read": round(cpu / reads * 1000, 2),
    }


async def nats_case(tmp: Path) -> tuple[Callable[[], Source[Any]], Callable[[], None]]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    from docktor.tools.sources.nats import NatsSettings, NatsSource
    from tests.support.peers import start_nats

    server = start_nats(tmp / "nats")
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(name="S", subjects=["s.>"])
    await js.add_consumer("S", ConsumerConfig(durable_name="C", ack_policy=AckPolicy.EXPLICIT, ack_wait=600))
    await asyncio.gather(*(js.publish("s.x", b"x" * 100) for _ in range(1000)))
    sub = await js.pull_subscribe_bind("C", stream="S")
    await sub.fetch(200, timeout=5)
    await nc.close()
    s = NatsSettings.model_validate({"kind": "nats", "url": server.url, "stream": "S", "consumer": "C"})
    return (lambda: NatsSource(s)), server.stop


async def rabbitmq_cases(tmp: Path) -> tuple[list[tuple[str, Callable[[], Source[Any]]]], Callable[[], Awaitable[None]]]:
    import os

    import aiormq

    from docktor.tools.sources.rabbitmq import RabbitMQSettings, RabbitMQSource
    from tests.support.servers import RabbitMQ

    broker = RabbitMQ.start(tmp / "rabbit")
    conn = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{broker.amqp_port}/")
    ch = await conn.channel()
    await ch.queue_declare("jobs", durable=True)
    for _ in range(1200):
        await ch.basic_publish(b"x" * 100, routing_key="jobs")
    for _ in range(200):
        await ch.basic_get("jobs", no_ack=False)  # held: the connection stays open during the run
    os.environ["BENCH_RMQ_USER"] = os.environ["BENCH_RMQ_PASS"] = "guest"
    creds = {"username_env": "BENCH_RMQ_USER", "password_env": "BENCH_RMQ_PASS", "queue": "jobs", "kind": "rabbitmq"}
    mgmt = RabbitMQSettings.model_validate({**creds, "url": broker.url})
    amqp = RabbitMQSettings.model_validate({**creds, "url": broker.amqp_url})

    async def stop() -> None:
        await conn.close()  # before the broker goes: no connection-reset noise
        broker.stop()

    cases: list[tuple[str, Callable[[], Source[Any]]]] = [
        ("rabbitmq (management API)", lambda: RabbitMQSource(mgmt)),
        ("rabbitmq (AMQP-only)", lambda: RabbitMQSource(amqp)),
    ]
    return cases, stop


def redis_cases(tmp: Path) -> tuple[list[tuple[str, Callable[[], Source[Any]]]], Callable[[], None]]:
    import redis

    from docktor.tools.sources.redis import CELERY_PRIORITY_SEP, RedisSettings, RedisSource
    from tests.support.servers import RedisServer

    server = RedisServer.start(tmp / "redis")
    r = redis.Redis(port=server.port)
    r.rpush("jobs", *(["x" * 100] * 1000))
    for i, key in enumerate(["celery", *(f"celery{CELERY_PRIORITY_SEP}{p}" for p in (3, 6, 9))]):
        r.rpush(key, *(["x" * 100] * (250 + i)))
    body = "x" * 1000
    r.hset("unacked", mapping={f"tag-{i}": json.dumps([{"body": body}, "", "celery"]) for i in range(200)})
    ids = [r.xadd("events", {"n": i}) for i in range(1000)]
    r.xgroup_create("events", "workers", id="0")
    r.xreadgroup("workers", "c1", {"events": ">"}, count=400)
    r.xack("events", "workers", *ids[:200])
    r.close()

    def settings(**mode: Any) -> RedisSettings:
        return RedisSettings.model_validate({"kind": "redis", "url": server.url, **mode})

    lists, celery, stream = settings(list="jobs"), settings(celery_queue="celery"), settings(stream="events", group="workers")
    cases: list[tuple[str, Callable[[], Source[Any]]]] = [
        ("redis list", lambda: RedisSource(lists)),
        ("redis celery (4 lists + 200 reserved)", lambda: RedisSource(celery)),
        ("redis stream group", lambda: RedisSource(stream)),
    ]
    return cases, server.stop


async def prometheus_case(tmp: Path) -> tuple[Callable[[], Source[Any]], Callable[[], None]]:
    from docktor.tools.sources.prometheus import PrometheusSettings, PrometheusSource
    from tests.support.servers import Exporter, PrometheusServer

    exporter = Exporter('jobs_waiting{queue="a"} 7\njobs_waiting{queue="b"} 3\njobs_done_total 42\n')
    prom = PrometheusServer.start(tmp / "prom", [exporter.target])
    s = PrometheusSettings.model_validate({"kind": "prometheus", "url": prom.url, "queries": {
        "queue.backlog": "sum(jobs_waiting)",
        "queue.rate_out": "sum(rate(jobs_done_total[30s]))",
        "jobs.max": "max(jobs_waiting)",
    }})
    src = PrometheusSource(s)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the first scrape is in
        try:
            if "queue.backlog" in await src.read():
                break
        except Exception:
            pass
        await asyncio.sleep(0.2)
    await src.close()

    def stop() -> None:
        prom.stop()
        exporter.stop()

    return (lambda: PrometheusSource(s)), stop


async def main_async(reads: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="docktor-bench-sources-") as d:
        tmp = Path(d)
        stops: list[Callable[[], Any]] = []  # sync, or returning an awaitable
        try:
            cases: list[tuple[str, Callable[[], Source[Any]]]] = []
            make, stop = await nats_case(tmp)
            stops.append(stop)
            cases.append(("nats", make))
            rabbit, stop = await rabbitmq_cases(tmp)
            stops.append(stop)
            cases += rabbit
            redis_list, stop = redis_cases(tmp)
            stops.append(stop)
            cases += redis_list
            make, stop = await prometheus_case(tmp)
            stops.append(stop)
            cases.append(("prometheus (3 queries)", make))
            for name, factory in cases:
                results.append(await measure(name, factory(), reads))
        finally:
            for stop in reversed(stops):
                if asyncio.iscoroutine(done := stop()):
                    await done
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args.reads))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| source | reads | median ms | p95 ms | max ms | CPU ms/read |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['source']} | {r['reads']} | {r['median_ms']} | {r['p95_ms']} | {r['max_ms']} | {r['cpu_ms_per_read']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
