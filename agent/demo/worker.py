"""One consumer replica of the demo: ``python -m docktor.agent.demo.worker --url U --stream S --consumer C``.

Pulls from a durable JetStream consumer, spends ``PROCESS_TIME_S`` per message, acks, and on
SIGTERM finishes and acks what it holds before it exits: the way a scaled worker should drain.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

#: per-message work in a replica: about 60 msg/s each
PROCESS_TIME_S = 0.016




async def _work(url: str, stream: str, consumer: str) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(consumer, stream)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    try:
        while not stopping.is_set():
            try:
                msgs = await sub.fetch(5, timeout=1)
            except (TimeoutError, NatsTimeout):  # nats-py raises either, depending on where it timed out
                continue
            # Messages in hand are finished and acked even when SIGTERM arrives: drain, don't drop.
            for msg in msgs:
                await asyncio.sleep(PROCESS_TIME_S)
                await msg.ack()
    finally:
        # Not nc.drain(): with a pull subscription it waits out its whole drain_timeout (30 s;
        # fetch() never marks the subscription's queue done), so the executor would SIGKILL the
        # replica. The acks are plain publishes: flushing them is all the draining left to do.
        try:
            await nc.flush(timeout=2)
        finally:
            await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docktor.agent.demo.worker", description="one consumer replica of the demo")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--consumer", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_work(args.url, args.stream, args.consumer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
