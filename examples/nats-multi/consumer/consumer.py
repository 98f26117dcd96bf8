"""A JetStream pull worker: fetch a batch, "process" each message for PROCESS_TIME_MS, ack it.

On SIGTERM it stops fetching, finishes and acks the messages it already holds, and exits, so
scaling in never strands work in flight (give it a stop_grace_period longer than one batch).
Creates the durable pull consumer when it is missing.

LOG_WAITS=1 prints, for every batch fetched, how long each of its messages waited: from the time
the stream stored it (its JetStream metadata) to the fetch that handed it to this worker, the
"publish -> start" wait Docktor's live attainment estimates (docs/policy.md). One line a batch:
``[host] waits at 1733580000.123: 0.012 0.015 ...`` (seconds; redeliveries left out).

ON_SIGTERM=exit (die at once, as a worker without a handler does) or ON_SIGTERM=ignore (carry on
until the SIGKILL at the end of the grace period) show what not draining costs: the messages held
are redelivered once their ack wait expires (``python -m benchmarks.scalein`` measures it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

NATS_URL = os.environ.get("NATS_URL", "nats://nats:4222")
STREAM = os.environ.get("STREAM", "EVENTS")
CONSUMER = os.environ.get("CONSUMER", "WEB_WORKERS")
SUBJECT = os.environ.get("SUBJECT", "events.web")
PROCESS_TIME_MS = float(os.environ.get("PROCESS_TIME_MS", "20"))
BATCH_SIZE = int(os.environ.get("BATCH_SIZE", "10"))
ON_SIGTERM = os.environ.get("ON_SIGTERM", "drain")  # drain | exit | ignore
LOG_WAITS = os.environ.get("LOG_WAITS", "0") not in ("", "0")
ME = socket.gethostname()


async def connect():
    while True:
        try:
            return await nats.connect(NATS_URL, max_reconnect_attempts=-1, connect_timeout=2)
        except Exception as e:
            print(f"[{ME}] cannot connect to {NATS_URL}: {e}; retrying", flush=True)
            await asyncio.sleep(1)


async def ensure_consumer(js, stop: asyncio.Event) -> bool:
    """Wait for the producer's stream, then create the durable consumer if it is missing."""
    while not stop.is_set():
        try:
            await js.consumer_info(STREAM, CONSUMER)
            return True
        except NotFoundError:
            pass
        try:
            await js.add_consumer(
                STREAM,
                ConsumerConfig(
                    durable_name=CONSUMER,
                    ack_policy=AckPolicy.EXPLICIT,
                    filter_subject=SUBJECT,
                    ack_wait=30,
                ),
            )
            print(f"[{ME}] created consumer {CONSUMER} on {STREAM}", flush=True)
            return True
        except NotFoundError:
            print(f"[{ME}] stream {STREAM} not there yet; waiting", flush=True)
        except Exception as e:  # another replica created it at the same moment: look again
            print(f"[{ME}] creating consumer: {e}", flush=True)
        await asyncio.sleep(1)
    return False


def log_waits(msgs) -> None:
    """Each first delivery's wait, stream time to now (this fetch handed them over): the truth the
    live attainment is checked against. A redelivery is no new start: left out."""
    now = time.time()
    waits = [now - m.metadata.timestamp.timestamp() for m in msgs if m.metadata.num_delivered == 1]
    if waits:
        print(f"[{ME}] waits at {now:.3f}: " + " ".join(f"{w:.3f}" for w in waits), flush=True)


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if ON_SIGTERM == "exit":
        loop.add_signal_handler(signal.SIGTERM, os._exit, 143)
    elif ON_SIGTERM == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)

    nc = await connect()
    js = nc.jetstream()
    if not await ensure_consumer(js, stop):
        await nc.close()
        return
    sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
    print(f"[{ME}] consuming {STREAM}/{CONSUMER}: {PROCESS_TIME_MS:g} ms per message, batches of {BATCH_SIZE}", flush=True)

    done = 0
    last_report = time.monotonic()
    while not stop.is_set():
        try:
            msgs = await sub.fetch(BATCH_SIZE, timeout=1)
        except (TimeoutError, NatsTimeout):
            msgs = []  # nothing to do for a second: ask again
        except Exception as e:  # connection hiccup: nats-py reconnects by itself
            print(f"[{ME}] fetch failed: {e}", flush=True)
            await asyncio.sleep(0.5)
            continue
        if msgs and LOG_WAITS:
            log_waits(msgs)
        # once fetched, a batch is finished even if SIGTERM arrives meanwhile: that is the drain
        for msg in msgs:
            await asyncio.sleep(PROCESS_TIME_MS / 1000)
            await msg.ack()
            done += 1
        if time.monotonic() - last_report >= 10:
            print(f"[{ME}] processed {done}", flush=True)
            last_report = time.monotonic()
    # not nc.drain(): with an idle pull subscription it waits out its whole timeout; the acks
    # are plain publishes, so flushing them is all the draining left to do
    try:
        await nc.flush(timeout=2)
    finally:
        await nc.close()
    print(f"[{ME}] stopping: batch finished and acked, {done} messages processed, exiting", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
