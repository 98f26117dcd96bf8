"""Sends `process` tasks to the Celery queue `jobs`: RATE per second, BURST_RATE during a burst of
BURST_DURATION seconds every BURST_INTERVAL seconds (0 = no bursts). RATE=0 and BURST_INTERVAL=0
keep it idle (the end-to-end test sends its own tasks)."""

from __future__ import annotations

import os
import time

from tasks import process

RATE = float(os.environ.get("RATE", "10"))
BURST_RATE = float(os.environ.get("BURST_RATE", "80"))
BURST_INTERVAL = float(os.environ.get("BURST_INTERVAL", "120"))
BURST_DURATION = float(os.environ.get("BURST_DURATION", "30"))


def rate_at(t: float) -> float:
    if BURST_INTERVAL > 0 and t % BURST_INTERVAL < BURST_DURATION:
        return BURST_RATE
    return RATE


def main() -> None:
    print(f"sending to jobs: {RATE:g}/s, bursts of {BURST_RATE:g}/s", flush=True)
    start, due, n = time.monotonic(), 0.0, 0
    while True:
        due += rate_at(time.monotonic() - start) * 0.1
        while n < int(due):
            process.apply_async(args=[n], queue="jobs")
            n += 1
        time.sleep(0.1)


if __name__ == "__main__":
    main()
