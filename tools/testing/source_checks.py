"""The contract every source keeps, one check per rule (``docs/plugins.md``, "The contract")."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from docktor.tools.sdk import Metrics, Source, SourceError
from docktor.tools.testing.cases import (
    DEFAULT_READ_BOUND_S,
    SLACK_S,
    NotApplicable,
    Run,
    SourcePeer,
    Violation,
    by_name,
    check_domain,
    texts_of,
    within,
)
from docktor.tools.testing.sockets import connections, left_open

#: what a source's restore() may raise for data it cannot use (anything else is a bug)
REFUSALS = (ValueError, KeyError, TypeError)
#: a longest event-loop stall, over this share of the read's timeout (and at least half a second),
#: means the read blocked the loop: a read that waits with await leaves it free all along
BLOCKED_SHARE = 0.8


def _timeout(run: Run, block: Mapping[str, Any]) -> float | None:
    peer: SourcePeer = run.peer
    return peer.timeout if peer.timeout is not None else getattr(run.settings(block), "timeout", None)


def _bound(run: Run, block: Mapping[str, Any]) -> float:
    timeout = _timeout(run, block)
    return (timeout if timeout is not None else DEFAULT_READ_BOUND_S) + SLACK_S


async def _read(run: Run, source: Source[Any], block: Mapping[str, Any], what: str) -> Metrics:
    return await within(_bound(run, block), what, source.read())


async def _using(run: Run, block: Mapping[str, Any], use: Callable[[Source[Any]], Awaitable[None]]) -> None:
    source = run.source(block)
    try:
        await use(source)
    finally:
        await within(_bound(run, block), "close()", source.close())


async def _source_error(run: Run, block: Mapping[str, Any], what: str) -> SourceError:
    """The SourceError that reading ``block``'s peer must raise."""
    caught: list[SourceError] = []

    async def read(source: Source[Any]) -> None:
        try:
            got = await _read(run, source, block, what)
        except SourceError as e:
            caught.append(e)
            return
        except Violation:
            raise
        except Exception as e:
            raise Violation(f"{what} raised {type(e).__name__}: {e} (not a SourceError: the daemon records that as a plugin bug)") from e
        raise Violation(f"{what} returned {got!r}: a source that can read nothing raises SourceError")

    await _using(run, block, read)
    if not str(caught[0]).strip():
        raise Violation(f"{what} raised a SourceError without a message: the decision log would say nothing")
    return caught[0]


# --------------------------------------------------------------------------- the checks


async def reads_known_figures(run: Run) -> None:
    """A healthy peer's figures, exactly; every metric declared and in its domain; twice."""
    peer: SourcePeer = run.peer
    infos = run.plugin.metrics_for(run.settings(peer.healthy))

    async def read(source: Source[Any]) -> None:
        for n in (1, 2):
            got = await _read(run, source, peer.healthy, f"read() #{n} of a healthy peer")
            check_domain(got, infos, f"read() #{n} of a healthy peer")
            wrong = {k: got.get(k) for k, v in peer.expect.items() if got.get(k) != v}
            if wrong:
                raise Violation(f"read() #{n} of a healthy peer gave {wrong}, expected {dict(peer.expect)}")

    await _using(run, peer.healthy, read)


async def absent_never_zero(run: Run) -> None:
    """A peer that is not there raises SourceError (no mapping of zeros, no empty mapping), and a
    metric the healthy peer cannot give is absent from the reading."""
    peer: SourcePeer = run.peer
    await _source_error(run, peer.unreachable, "read() of an unreachable peer")
    infos = run.plugin.metrics_for(run.settings(peer.healthy))
    undeclared = sorted(set(peer.missing) - set(infos))
    if undeclared:
        raise Violation(f"the case names missing metrics the source does not declare: {', '.join(undeclared)}")

    async def read(source: Source[Any]) -> None:
        got = await _read(run, source, peer.healthy, "the first read() of a healthy peer")
        present = {k: got[k] for k in peer.missing if k in got}
        if present:
            raise Violation(f"metrics that cannot be read were reported: {present} (absent, never zero)")

    await _using(run, peer.healthy, read)


async def garbage_is_a_source_error(run: Run) -> None:
    """Garbage from the peer is a SourceError within the timeout: not another exception, not a hang."""
    peer: SourcePeer = run.peer
    if not peer.garbage:
        raise NotApplicable("the case gives no peer answering garbage (SourcePeer.garbage)")
    for i, block in enumerate(peer.garbage):
        await _source_error(run, block, f"read() of garbage peer #{i + 1}")


async def timeout_honoured(run: Run) -> None:
    """Against a peer that accepts and never answers, a read ends within its timeout (plus slack),
    raising SourceError or returning declared metrics, without blocking the event loop."""
    peer: SourcePeer = run.peer
    if peer.silent is None:
        raise NotApplicable("the case gives no silent peer (SourcePeer.silent)")
    timeout = _timeout(run, peer.silent)
    if timeout is None:
        raise NotApplicable("the settings have no timeout and the case names none (SourcePeer.timeout)")
    infos = run.plugin.metrics_for(run.settings(peer.silent))

    async def read(source: Source[Any]) -> None:
        stalls = _Heartbeat()
        began = time.monotonic()
        try:
            got = await stalls.during(_read(run, source, peer.silent or {}, "read() of a silent peer"))
        except SourceError:
            pass
        except Violation:
            raise
        except Exception as e:
            raise Violation(f"read() of a silent peer raised {type(e).__name__}: {e} (not a SourceError)") from e
        else:
            check_domain(got, infos, "read() of a silent peer")
        took = time.monotonic() - began
        if stalls.longest >= max(0.5, BLOCKED_SHARE * timeout):
            raise Violation(f"read() of a silent peer blocked the event loop for {stalls.longest:.1f} s (of {took:.1f} s): "
                            "wait with await (asyncio, or asyncio.to_thread), never in a blocking call")

    await _using(run, peer.silent, read)


async def snapshot_round_trips(run: Run) -> None:
    """snapshot() -> JSON -> restore() on a new instance, whose first read has what the baseline
    buys (what a source's second read has and its first lacks: rates); data that does not fit is
    refused (False, or ValueError/KeyError/TypeError)."""
    peer: SourcePeer = run.peer
    infos = run.plugin.metrics_for(run.settings(peer.healthy))
    reads: list[Metrics] = []
    saved: list[str | None] = []

    async def before(source: Source[Any]) -> None:
        _serialisable(source.snapshot(), "snapshot() before any read")
        reads.append(await _read(run, source, peer.healthy, "read() #1, before the snapshot"))
        saved.append(_serialisable(source.snapshot(), "snapshot() after a read"))
        reads.append(await _read(run, source, peer.healthy, "read() #2, after the snapshot"))

    async def refuse(source: Source[Any]) -> None:
        try:
            kept = source.restore({"v": -1, "garbage": [1, "two"]}, 1.0)
        except REFUSALS:
            kept = False
        if kept is not False:
            raise Violation(f"restore() of data it never wrote returned {kept!r}: refuse it (False, or ValueError/KeyError/TypeError)")
        check_domain(await _read(run, source, peer.healthy, "read() after a refused restore()"), infos, "read() after a refused restore()")

    await _using(run, peer.healthy, before)
    await _using(run, peer.healthy, refuse)
    if saved[0] is None:
        return  # nothing to keep across a restart: the refusal above is the whole contract
    text = saved[0]
    wanted = set(peer.rates) if peer.rates is not None else set(reads[1]) - set(reads[0])

    async def after(source: Source[Any]) -> None:
        if source.restore(json.loads(text), 2.0) is not True:
            raise Violation("restore() refused what snapshot() returned, after the JSON round trip")
        got = await _read(run, source, peer.healthy, "the first read() after restore()")
        check_domain(got, infos, "the first read() after restore()")
        lacking = sorted(wanted - got.keys())
        if lacking:
            raise Violation(f"the first read() after restore() lacks {', '.join(lacking)}: the baseline did not survive")

    await _using(run, peer.healthy, after)


async def no_secret_leaks(run: Run) -> None:
    """describe(), check(), errors, readings and logs hold no secret the settings name."""
    peer: SourcePeer = run.peer
    healthy, unreachable = {**peer.healthy, **peer.secrets}, {**peer.unreachable, **peer.secrets}
    settings = run.settings(healthy)
    names = [
        value for key, value in settings if key.endswith("_env") and "user" not in key and isinstance(value, str) and value
    ]
    if not names:
        raise NotApplicable("the settings name no secret (no *_env setting); give SourcePeer.secrets to name one")
    canaries = [f"canary-{uuid.uuid4().hex}" for _ in names]
    for name, canary in zip(names, canaries):
        run.setenv(name, canary)
    texts = [run.plugin.describe(settings), *run.plugin.check(settings, run.context())]
    for block, what in ((healthy, "the healthy peer"), (unreachable, "an unreachable peer")):

        async def read(source: Source[Any], what: str = what, block: dict[str, Any] = block) -> None:
            try:
                texts.append(repr(await _read(run, source, block, f"read() of {what}, with secrets")))
            except Violation:
                raise
            except Exception as e:
                texts.extend(texts_of(e))

        await _using(run, block, read)
    texts.append(run.logs())
    leaked = [text for text in texts if any(c in text for c in canaries)]
    if leaked:
        raise Violation(f"a secret (a canary value of {', '.join(names)}) reached: {leaked[0][:300]!r}")


async def close_releases(run: Run) -> None:
    """close() returns, on a source that never read and on one that did, and leaves no connection open."""
    peer: SourcePeer = run.peer
    before = connections()

    async def nothing(source: Source[Any]) -> None:
        pass

    async def read(source: Source[Any]) -> None:
        await _read(run, source, peer.healthy, "read() of a healthy peer")

    await _using(run, peer.healthy, nothing)
    await _using(run, peer.healthy, read)
    left = await left_open(before, _bound(run, peer.healthy))
    if left:
        raise Violation(f"close() left {len(left)} connection(s) open: {', '.join(sorted(left.values()))}")


SOURCE_CHECKS = by_name(
    reads_known_figures, absent_never_zero, garbage_is_a_source_error, timeout_honoured,
    snapshot_round_trips, no_secret_leaks, close_releases,
)


# --------------------------------------------------------------------------- helpers


def _serialisable(data: Any, what: str) -> str | None:
    """``data`` as the state file keeps it (JSON, taken at once: later reads must not change it)."""
    if data is None:
        return None
    try:
        return json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Violation(f"{what} is not JSON-serialisable (the state file is JSON): {e}") from None


class _Heartbeat:
    """The longest the event loop went without running a 50 ms heartbeat, while a call ran."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = time.monotonic()

    def _beat(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last - 0.05)
        self._last = now

    async def during(self, call: Awaitable[Any]) -> Any:
        async def beat() -> None:
            while True:
                await asyncio.sleep(0.05)
                self._beat()

        self._last = time.monotonic()  # a call that blocks before its first await counts too
        task = asyncio.create_task(beat())
        try:
            return await call
        finally:
            self._beat()  # and one that blocks after its last
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
