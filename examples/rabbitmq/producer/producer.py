"""Publishes jobs to the durable RabbitMQ queue QUEUE: RATE per second, BURST_RATE during a burst
of BURST_DURATION seconds every BURST_INTERVAL seconds (0 = no bursts). RATE=0 and
BURST_INTERVAL=0 keep it idle (the end-to-end test publishes its own messages)."""

from __future__ import annotations

import json
import os
import time

import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@rabbitmq:5672/%2F")
QUEUE = os.environ.get("QUEUE", "jobs")
RATE = float(os.environ.get("RATE", "40"))
BURST_RATE = float(os.environ.get("BURST_RATE", "400"))
BURST_INTERVAL = float(os.environ.get("BURST_INTERVAL", "120"))
BURST_DURATION = float(os.environ.get("BURST_DURATION", "30"))


def connect() -> pika.adapters.blocking_connection.BlockingChannel:
    while True:
        try:
            channel = pika.BlockingConnection(pika.URLParameters(URL)).channel()
            channel.queue_declare(QUEUE, durable=True)
            return channel
        except (pika.exceptions.AMQPError, OSError) as e:  # OSError: DNS or network not ready yet
            print(f"cannot connect to RabbitMQ ({e!r}); retrying", flush=True)
            time.sleep(1)


def rate_at(t: float) -> float:
    if BURST_INTERVAL > 0 and t % BURST_INTERVAL < BURST_DURATION:
        return BURST_RATE
    return RATE


def main() -> None:
    channel = connect()
    print(f"publishing to {QUEUE}: {RATE:g}/s, bursts of {BURST_RATE:g}/s", flush=True)
    start, sent, n = time.monotonic(), 0.0, 0
    while True:
        t = time.monotonic() - start
        sent += rate_at(t) * 0.1
        while n < int(sent):
            body = json.dumps({"n": n, "at": time.time()}).encode()
            try:
                channel.basic_publish("", QUEUE, body, pika.BasicProperties(delivery_mode=2))
            except (pika.exceptions.AMQPError, OSError):
                channel = connect()
                continue
            n += 1
        channel.connection.process_data_events(time_limit=0.1)


if __name__ == "__main__":
    main()
