"""A RabbitMQ worker: takes up to PREFETCH jobs from QUEUE, "processes" each for PROCESS_TIME_MS,
acknowledges it. On SIGTERM it stops taking jobs, finishes and acknowledges the one in hand,
returns the ones it prefetched to the queue, and exits: scaling in loses no work."""

from __future__ import annotations

import os
import signal
import socket
import time

import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@rabbitmq:5672/%2F")
QUEUE = os.environ.get("QUEUE", "jobs")
PROCESS_TIME_MS = float(os.environ.get("PROCESS_TIME_MS", "20"))
PREFETCH = int(os.environ.get("PREFETCH", "10"))
ME = socket.gethostname()
stopping = False


def stop(*_: object) -> None:
    global stopping
    stopping = True


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(URL))
            break
        except (pika.exceptions.AMQPError, OSError) as e:  # OSError: DNS or network not ready yet
            print(f"[{ME}] cannot connect ({e!r}); retrying", flush=True)
            time.sleep(1)
    else:
        return
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True)
    channel.basic_qos(prefetch_count=PREFETCH)
    print(f"[{ME}] consuming {QUEUE}: {PROCESS_TIME_MS:g} ms per job, prefetch {PREFETCH}", flush=True)
    done = 0
    # inactivity_timeout: wake up every second to notice SIGTERM while the queue is idle
    for method, _properties, _body in channel.consume(QUEUE, inactivity_timeout=1):
        if stopping:
            break
        if method is None:
            continue
        time.sleep(PROCESS_TIME_MS / 1000)
        channel.basic_ack(method.delivery_tag)
        done += 1
        if stopping:
            break
    requeued = channel.cancel()  # prefetched but not started: back to the queue
    connection.close()
    print(f"[{ME}] stopped after {done} jobs; {requeued} prefetched jobs returned to the queue", flush=True)


if __name__ == "__main__":
    main()
