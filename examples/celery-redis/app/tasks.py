"""The Celery app: one task, `process`, that spends WORK_MS on a job (mostly waiting, as tasks
calling an API or a database do, plus a little CPU) and counts it in Redis (`example:done`).

Late acknowledgement and a prefetch of one: a task stays reserved (kombu's `unacked` hash) until
it has finished, so Docktor's `queue.backlog` counts the tasks being worked on, and a worker
stopped by a scale-in hands its unfinished task back instead of losing it.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://redis:6379/0")
WORK_MS = float(os.environ.get("WORK_MS", "100"))
CPU_SHARE = float(os.environ.get("CPU_SHARE", "0.2"))  # fraction of WORK_MS spent computing

app = Celery("example", broker=BROKER)
app.conf.update(
    task_default_queue="jobs",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_counter: redis.Redis | None = None


@app.task(name="process")
def process(n: int) -> int:
    global _counter
    busy_until = time.monotonic() + WORK_MS * CPU_SHARE / 1000
    x = 0
    while time.monotonic() < busy_until:  # the CPU part (shows in cpu.avg)
        x += 1
    time.sleep(WORK_MS * (1 - CPU_SHARE) / 1000)  # the waiting part
    if _counter is None:
        _counter = redis.Redis.from_url(BROKER)
    _counter.incr("example:done")
    return n
