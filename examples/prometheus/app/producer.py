"""Pushes jobs to the Redis list QUEUE: RATE per second, BURST_RATE during a burst of
BURST_DURATION seconds every BURST_INTERVAL seconds (0 = no bursts). RATE=0 and BURST_INTERVAL=0
keep it idle (the end-to-end test pushes its own jobs)."""

from __future__ import annotations

import json
import os
import time

import redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")
QUEUE = os.environ.get("QUEUE", "jobs")
RATE = float(os.environ.get("RATE", "10"))
BURST_RATE = float(os.environ.get("BURST_RATE", "80"))
BURST_INTERVAL = float(os.environ.get("BURST_INTERVAL", "120"))
BURST_DURATION = float(os.environ.get("BURST_DURATION", "30"))


def rate_at(t: float) -> float:
    if BURST_INTERVAL > 0 and t % BURST_INTERVAL < BURST_DURATION:
        return BURST_RATE
    return RATE


def main() -> None:
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    print(f"pushing to {QUEUE}: {RATE:g}/s, bursts of {BURST_RATE:g}/s", flush=True)
    start, due, n = time.monotonic(), 0.0, 0
    while True:
        due += rate_at(time.monotonic() - start) * 0.1
        batch = []
        while n < int(due):
            batch.append(json.dumps({"n": n, "at": time.time()}))
            n += 1
        try:
            if batch:
                r.rpush(QUEUE, *batch)
        except redis.RedisError as e:
            print(f"redis: {e}; retrying", flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
