"""A worker that takes jobs from the Redis list QUEUE and exports Prometheus metrics on :8000.

Exported (what Docktor's Prometheus queries read):
  worker_queue_length          gauge: the jobs waiting in QUEUE, as this worker last saw them
  worker_jobs_done_total       counter: jobs this worker finished
  worker_busy_seconds_total    counter: seconds this worker spent on jobs (rate() = busy fraction)

Each job takes WORK_MS. On SIGTERM the worker finishes the job in hand and exits.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import redis
from prometheus_client import Counter, Gauge, start_http_server

REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")
QUEUE = os.environ.get("QUEUE", "jobs")
WORK_MS = float(os.environ.get("WORK_MS", "50"))
ME = socket.gethostname()

QUEUE_LENGTH = Gauge("worker_queue_length", "Jobs waiting in the queue, as this worker last saw them")
DONE = Counter("worker_jobs_done", "Jobs this worker finished")
BUSY = Counter("worker_busy_seconds", "Seconds this worker spent on jobs")
stopping = False


def stop(*_: object) -> None:
    global stopping
    stopping = True


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    start_http_server(8000)
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    print(f"[{ME}] working on {QUEUE}: {WORK_MS:g} ms per job; metrics on :8000", flush=True)
    done = 0
    while not stopping:
        try:
            QUEUE_LENGTH.set(r.llen(QUEUE))
            job = r.blpop([QUEUE], timeout=1)  # wakes up every second to notice SIGTERM
        except redis.RedisError as e:
            print(f"[{ME}] redis: {e}; retrying", flush=True)
            time.sleep(1)
            continue
        if job is None:
            continue
        started = time.monotonic()
        time.sleep(WORK_MS / 1000)  # the work
        r.incr("example:done")
        BUSY.inc(time.monotonic() - started)
        DONE.inc()
        done += 1
    print(f"[{ME}] stopped after {done} jobs", flush=True)


if __name__ == "__main__":
    main()
