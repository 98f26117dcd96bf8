"""Publish to a JetStream stream at a steady rate, with periodic bursts.

RATE msg/s all the time; every BURST_INTERVAL seconds, BURST_RATE msg/s for BURST_DURATION
seconds instead (BURST_INTERVAL=0 turns bursts off). Creates the stream when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import nats
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

NATS_URL = os.environ.get("NATS_URL", "nats://nats:4222")
STREAM = os.environ.get("STREAM", "EVENTS")
SUBJECT = os.environ.get("SUBJECT", "events.web")
RATE = float(os.environ.get("RATE", "80"))
BURST_RATE = float(os.environ.get("BURST_RATE", "450"))
BURST_INTERVAL = float(os.environ.get("BURST_INTERVAL", "120"))
BURST_DURATION = float(os.environ.get("BURST_DURATION", "30"))
TICK = 0.05  # publish in small slices so the rate is smooth at any value


def rate_at(elapsed: float) -> float:
    if BURST_INTERVAL > 0 and BURST_DURATION > 0:
        # the first burst comes after one interval, so the system starts from its base load
        phase = elapsed % BURST_INTERVAL
        if elapsed >= BURST_INTERVAL and phase < BURST_DURATION:
            return BURST_RATE
    return RATE


async def ensure_stream(js) -> None:
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        # work-queue retention: a message is deleted once acked, so the store stays small
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], retention=RetentionPolicy.WORK_QUEUE))
        print(f"created stream {STREAM} for {SUBJECT}", flush=True)


async def connect():
    while True:
        try:
            return await nats.connect(NATS_URL, max_reconnect_attempts=-1, connect_timeout=2)
        except Exception as e:  # NATS not up yet: keep trying, as a worker in a compose stack should
            print(f"cannot connect to {NATS_URL}: {e}; retrying", flush=True)
            await asyncio.sleep(1)


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    nc = await connect()
    js = nc.jetstream()
    await ensure_stream(js)
    print(f"publishing to {SUBJECT}: {RATE:g}/s, bursts of {BURST_RATE:g}/s for {BURST_DURATION:g}s "
          f"every {BURST_INTERVAL:g}s", flush=True)

    start = time.monotonic()
    due = 0.0  # messages owed so far (fractional)
    sent = seq = 0
    last_report = start
    while not stop.is_set():
        now = time.monotonic()
        due += rate_at(now - start) * TICK
        batch = int(due)
        due -= batch
        if batch:
            acks = [js.publish(SUBJECT, json.dumps({"n": seq + i, "ts": time.time()}).encode()) for i in range(batch)]
            results = await asyncio.gather(*acks, return_exceptions=True)
            ok = sum(1 for r in results if not isinstance(r, BaseException))
            sent += ok
            seq += batch
            if ok < batch:
                print(f"{batch - ok} publishes failed: {next(r for r in results if isinstance(r, BaseException))}", flush=True)
        if now - last_report >= 10:
            print(f"published {sent} in total, now {rate_at(now - start):g}/s", flush=True)
            last_report = now
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, TICK - (time.monotonic() - now)))
        except TimeoutError:
            pass
    try:
        await nc.flush(timeout=2)
    finally:
        await nc.close()
    print(f"stopped after {sent} messages", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
