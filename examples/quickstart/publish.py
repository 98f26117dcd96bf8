"""Publish jobs for the workers: ``python publish.py --rate 300 --seconds 30``.

    NATS_URL=nats://127.0.0.1:4222 python publish.py --rate 300 --seconds 30

Creates the stream JOBS if it does not exist yet (so it works before any worker has started).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import nats
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


async def main(rate: float, seconds: float) -> int:
    nc = await nats.connect(URL, connect_timeout=5)
    js = nc.jetstream()
    try:
        await js.stream_info("JOBS")
    except NotFoundError:
        await js.add_stream(StreamConfig(name="JOBS", subjects=["jobs.>"]))
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        for _ in range(int(elapsed * rate) - sent):  # keep to the rate, in 50 ms slices
            await js.publish("jobs.work", b"job")
            sent += 1
        await asyncio.sleep(0.05)
    await nc.close()
    print(f"published {sent} jobs in {seconds:g} s")
    return sent


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=300, help="jobs per second (default 300)")
    ap.add_argument("--seconds", type=float, default=30, help="how long (default 30)")
    args = ap.parse_args()
    asyncio.run(main(args.rate, args.seconds))
