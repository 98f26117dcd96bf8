"""JetStream streams the runtime and CLI tests read through the nats source: a stream per name on
``name.lower().>``, a durable consumer WORKERS, and a backlog published before the daemon looks."""

from __future__ import annotations

__all__ = ["make_stream", "make_streams", "publish", "purge"]


async def make_streams(url: str, backlog: dict[str, int]) -> None:
    """For each name: stream ``name`` on ``name.lower().>``, its consumer WORKERS, and
    ``backlog[name]`` messages waiting on ``name.lower().x``."""
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name, n in backlog.items():
            await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
            await js.add_consumer(name, ConsumerConfig(durable_name="WORKERS"))
            for _ in range(n):
                await js.publish(f"{name.lower()}.x", b"m")
    finally:
        await nc.close()


async def make_stream(url: str, backlog: int = 0, *, name: str = "JOBS") -> None:
    """One stream of :func:`make_streams` (JOBS unless named), with ``backlog`` messages waiting."""
    await make_streams(url, {name: backlog})


async def publish(url: str, subject: str, n: int) -> None:
    """``n`` messages on ``subject``, each acknowledged by JetStream before the next."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for _ in range(n):
            await js.publish(subject, b"x")
    finally:
        await nc.close()


async def purge(url: str, stream: str) -> None:
    """Every message of ``stream`` gone: the load has ended."""
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream(stream)
    finally:
        await nc.close()
