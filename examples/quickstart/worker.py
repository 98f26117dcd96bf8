"""A queue worker to scale: pulls jobs from NATS JetStream, works on each, acks it.

    NATS_URL=nats://127.0.0.1:4222 python worker.py

It creates the stream JOBS (subjects jobs.>) and the durable consumer WORKERS if they do not
exist yet, so the first replica prepares the queue. Each job takes WORK_MS milliseconds (default
20: one replica handles about 50 jobs/s). On SIGTERM it stops fetching, finishes and acks what it
holds, and exits: the way a worker should behave when Docktor scales in.
"""

from __future__ import annotations

import asyncio
import os
import signal

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
WORK_S = float(os.environ.get("WORK_MS", "20")) / 1000


async def ensure_queue(js: nats.js.JetStreamContext) -> None:
    try:
        await js.stream_info("JOBS")
    except NotFoundError:
        await js.add_stream(StreamConfig(name="JOBS", subjects=["jobs.>"]))
    try:
        await js.consumer_info("JOBS", "WORKERS")
    except NotFoundError:
        await js.add_consumer("JOBS", ConsumerConfig(durable_name="WORKERS", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))


async def main() -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    nc = await nats.connect(URL, connect_timeout=5, max_reconnect_attempts=-1)
    js = nc.jetstream()
    await ensure_queue(js)
    sub = await js.pull_subscribe_bind("WORKERS", "JOBS")
    try:
        while not stopping.is_set():
            try:
                jobs = await sub.fetch(5, timeout=1)
            except (TimeoutError, NatsTimeout):
                continue
            for job in jobs:  # jobs in hand are finished and acked, even after SIGTERM
                await asyncio.sleep(WORK_S)
                await job.ack()
    finally:
        # Not nc.drain(): nats-py's drain waits until the pull subscription's internal queue is
        # marked done, which fetch() never does, so it sits out its whole drain_timeout (30 s)
        # and Docktor SIGKILLs the worker. The acks are plain publishes: flushing them is all the
        # draining there is left to do.
        try:
            await nc.flush(timeout=2)
        finally:
            await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
