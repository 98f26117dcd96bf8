"""A real Celery app for the Redis source tests (the worker runs it in a subprocess).

``hold`` blocks until the test pushes a token to the Redis list ``release`` (or 120 s pass), so
a test decides exactly how many tasks are reserved by the worker and when they finish.
Late acks and a prefetch of one task per process: the worker reserves exactly ``concurrency``
tasks, and a task stays in kombu's ``unacked`` hash until it finished (what docktor reads as
in flight).
"""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")



def make_app(broker: str) -> Celery:
    """The app as the worker and the tests' producer both see it."""
    celery = Celery("docktor_test", broker=broker)
    celery.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @celery.task(name="hold")
    def hold() -> str:
        r = redis.Redis.from_url(broker)
        r.blpop(["release"], timeout=120)
        r.incr("done")
        return "ok"

    return celery


app = make_app(BROKER)
