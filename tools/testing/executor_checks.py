"""The contract every executor keeps, one check per rule (``docs/plugins.md``, "The contract")."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from docktor.tools.sdk import Context, Executor, ExecutorError, LastScale, ReplicaStatus, ScaleOutcome
from docktor.tools.testing.cases import (
    SLACK_S,
    ExecutorPeer,
    NotApplicable,
    Run,
    Violation,
    by_name,
    check_domain,
    plausible_epoch,
    texts_of,
    within,
)
from docktor.tools.testing.sockets import connections, left_open

#: the bound of one scale when neither the settings (``scale_timeout``) nor the peer name one
DEFAULT_SCALE_S = 30.0


def _bound(run: Run, block: Mapping[str, Any]) -> float:
    peer: ExecutorPeer = run.peer
    if peer.timeout is not None:
        return peer.timeout + SLACK_S
    settings = run.settings(block)
    scale = getattr(settings, "scale_timeout", None) or DEFAULT_SCALE_S
    return float(scale) + float(run.plugin.grace_period(settings)) + SLACK_S


async def _using(
    run: Run, block: Mapping[str, Any], use: Callable[[Executor[Any]], Awaitable[None]], context: Context | None = None
) -> None:
    executor = run.executor(block, context)
    try:
        await use(executor)
    finally:
        await within(_bound(run, block), "close()", executor.close())


async def _status(run: Run, executor: Executor[Any], block: Mapping[str, Any], what: str) -> ReplicaStatus:
    status = await within(_bound(run, block), what, executor.status())
    if not isinstance(status, ReplicaStatus):
        raise Violation(f"{what} returned {type(status).__name__}, not a ReplicaStatus")
    counts = {"desired": status.desired, "running": status.running, "failed": status.failed}
    wrong = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
    if wrong:
        raise Violation(f"{what} reported counts that are not whole numbers >= 0: {wrong}")
    if not isinstance(status.detail, str):
        raise Violation(f"{what} reported a detail that is not text: {status.detail!r}")
    check_domain(status.metrics, run.plugin.metrics_for(run.settings(block)), f"{what} (its metrics)")
    return status


async def _scale(run: Run, executor: Executor[Any], block: Mapping[str, Any], n: int) -> ScaleOutcome:
    what = f"scale({n})"
    try:
        outcome = await within(_bound(run, block), what, executor.scale(n))
    except Violation:
        raise
    except Exception as e:
        raise Violation(f"{what} raised {type(e).__name__}: {e} (a backend failure is a failed outcome, never a raise)") from e
    if not isinstance(outcome, ScaleOutcome):
        raise Violation(f"{what} returned {type(outcome).__name__}, not a ScaleOutcome")
    if not outcome.message.strip() or "\n" in outcome.message.strip():
        raise Violation(f"{what}'s outcome message must be one line saying what happened, got {outcome.message!r}")
    return outcome


def _verified(run: Run, outcome: ScaleOutcome, status: ReplicaStatus, n: int) -> None:
    if not outcome.ok:
        raise Violation(f"scale({n}) failed against a healthy backend: {outcome.message}")
    if run.plugin.delegates:  # another controller acts later: nothing was verified, the count is recorded
        if outcome.running is not None:
            raise Violation(f"scale({n}) of a delegating executor said running={outcome.running}: it verified nothing, so None")
        if status.desired != n:
            raise Violation(f"after an ok scale({n}), a delegating executor's status() reports desired={status.desired}")
        return
    if outcome.running != n:
        raise Violation(f"scale({n}) said ok with running={outcome.running!r}: ok means {n} verified running")
    if (status.desired, status.running) != (n, n):
        raise Violation(f"after an ok scale({n}), status() reports desired={status.desired}, running={status.running}")


# --------------------------------------------------------------------------- the checks


async def status_reports(run: Run) -> None:
    """status() reports whole counts, declared metrics in their domain, twice in a row."""
    peer: ExecutorPeer = run.peer

    async def use(executor: Executor[Any]) -> None:
        for n in (1, 2):
            await _status(run, executor, peer.settings, f"status() #{n}")

    await _using(run, peer.settings, use)


async def scale_verifies(run: Run) -> None:
    """scale(n) returns after verifying n run; a scale-in names each replica it removed, why, and how.
    A delegating executor (``Executor.delegates``) verifies nothing and names none: its status() reports n."""
    peer: ExecutorPeer = run.peer
    up, down = peer.scale
    if not 0 <= down < up:
        raise Violation(f"ExecutorPeer.scale must be (up, down) with 0 <= down < up, got {peer.scale}")

    async def use(executor: Executor[Any]) -> None:
        grown = await _scale(run, executor, peer.settings, up)
        _verified(run, grown, await _status(run, executor, peer.settings, f"status() after scale({up})"), up)
        shrunk = await _scale(run, executor, peer.settings, down)
        _verified(run, shrunk, await _status(run, executor, peer.settings, f"status() after scale({down})"), down)
        if run.plugin.delegates:
            if shrunk.removed:
                raise Violation(f"scale({down}) of a delegating executor named removed replicas: the controller it delegates to chooses them")
            return
        if len(shrunk.removed) != up - down:
            raise Violation(f"scale({down}) from {up} reported {len(shrunk.removed)} removed replicas, not {up - down}")
        names = [r.replica for r in shrunk.removed]
        if len(set(names)) != len(names):
            raise Violation(f"scale({down}) reported the same replica twice: {names}")
        for r in shrunk.removed:
            if not all(isinstance(x, str) and x.strip() and "\n" not in x for x in (r.replica, r.why, r.stopped)):
                raise Violation(f"a removed replica must say which, why that one and how it stopped, each in one line: {r}")

    await _using(run, peer.settings, use)


async def failure_is_an_outcome(run: Run) -> None:
    """A scale the backend cannot carry out is a failed outcome with one line saying why, never a raise."""
    peer: ExecutorPeer = run.peer
    if peer.failing is None:
        raise NotApplicable("the case gives no settings the backend cannot scale (ExecutorPeer.failing)")
    block = peer.failing

    async def use(executor: Executor[Any]) -> None:
        try:
            outcome = await _scale(run, executor, block, 1)
            if outcome.ok:
                raise Violation(f"scale(1) of a service that cannot run said ok: {outcome.message}")
            if outcome.running not in (None, 0):
                raise Violation(f"scale(1) failed yet reported running={outcome.running} for a service that cannot run")
        finally:
            with contextlib.suppress(Exception):  # tidying up: what the check found matters, not this
                await within(_bound(run, block), "scale(0) after the failure", executor.scale(0))

    await _using(run, block, use)


async def unreachable_is_an_executor_error(run: Run) -> None:
    """A backend that cannot be asked: status() raises ExecutorError, scale() is a failed outcome."""
    peer: ExecutorPeer = run.peer
    if peer.unreachable is None:
        raise NotApplicable("the case gives no unreachable backend (ExecutorPeer.unreachable)")
    block = peer.unreachable
    for name, value in peer.unreachable_env.items():
        run.setenv(name, value)

    async def use(executor: Executor[Any]) -> None:
        try:
            got = await within(_bound(run, block), "status() of an unreachable backend", executor.status())
        except ExecutorError as e:
            if not str(e).strip():
                raise Violation("status() of an unreachable backend raised an ExecutorError without a message") from None
        except Violation:
            raise
        except Exception as e:
            raise Violation(f"status() of an unreachable backend raised {type(e).__name__}: {e} (not an ExecutorError)") from e
        else:
            raise Violation(f"status() of an unreachable backend returned {got}: it must raise ExecutorError")
        outcome = await _scale(run, executor, block, 1)
        if outcome.ok:
            raise Violation(f"scale(1) of an unreachable backend said ok: {outcome.message}")

    await _using(run, block, use)


async def close_releases(run: Run) -> None:
    """close() returns and leaves no connection or lock behind: a new executor on the same service
    asks the backend at once. An in-process executor's replicas stop with it; others stay."""
    peer: ExecutorPeer = run.peer
    n = max(1, peer.scale[1])
    before = connections()

    async def use(executor: Executor[Any]) -> None:
        _verified(run, await _scale(run, executor, peer.settings, n), await _status(run, executor, peer.settings, f"status() after scale({n})"), n)

    await _using(run, peer.settings, use)
    left = await left_open(before, _bound(run, peer.settings))
    if left:
        raise Violation(f"close() left {len(left)} connection(s) open: {', '.join(sorted(left.values()))}")

    async def after(executor: Executor[Any]) -> None:
        status = await _status(run, executor, peer.settings, "status() of a new executor after close()")
        expected = 0 if run.plugin.in_process else n
        if status.running != expected:
            kept = "an in-process executor's close() stops its replicas" if run.plugin.in_process else "the backend keeps its replicas"
            raise Violation(f"after close(), a new executor sees {status.running} running, not {expected}: {kept}")

    await _using(run, peer.settings, after)


async def target_and_last_scaled(run: Run) -> None:
    """target() names the same thing from two instances; last_scaled() is None or a plausible time."""
    peer: ExecutorPeer = run.peer
    targets: list[str | None] = []

    async def use(executor: Executor[Any]) -> None:
        target = executor.target()
        if target is not None and (not isinstance(target, str) or not target.strip() or "\n" in target):
            raise Violation(f"target() must be None or one line naming what it scales, got {target!r}")
        targets.append(target)
        last = await within(_bound(run, peer.settings), "last_scaled()", executor.last_scaled())
        if last is None:
            return
        if not isinstance(last, LastScale) or not plausible_epoch(last.at) or last.direction not in ("up", "down", None):
            raise Violation(f"last_scaled() must be None or a LastScale of a past wall-clock time, got {last!r}")

    await _using(run, peer.settings, use)
    await _using(run, peer.settings, use)
    if targets[0] != targets[1]:
        raise Violation(f"two executors with the same settings name different targets: {targets[0]!r} and {targets[1]!r}")


async def no_secret_leaks(run: Run) -> None:
    """Docktor's own credentials (Context.secret_env) reach no description, target, status or outcome."""
    peer: ExecutorPeer = run.peer
    name, canary = "DOCKTOR_CONTRACT_SECRET", f"canary-{uuid.uuid4().hex}"
    run.setenv(name, canary)
    context = dataclasses.replace(peer.context, secret_env=peer.context.secret_env | {name})
    settings = run.settings(peer.settings)
    texts = [run.plugin.describe(settings)]
    try:
        texts += run.plugin.check(settings, context)
    except ExecutorError as e:
        texts += texts_of(e)

    async def use(executor: Executor[Any]) -> None:
        texts.append(str(executor.target()))
        status = await _status(run, executor, peer.settings, "status()")
        texts.append(status.detail)
        outcome = await _scale(run, executor, peer.settings, status.desired)
        texts.extend([outcome.message, *(str(r) for r in outcome.removed)])

    await _using(run, peer.settings, use, context)
    texts.append(run.logs())
    leaked = [text for text in texts if canary in text]
    if leaked:
        raise Violation(f"a credential named in Context.secret_env reached: {leaked[0][:300]!r}")


EXECUTOR_CHECKS = by_name(
    status_reports, scale_verifies, failure_is_an_outcome, unreachable_is_an_executor_error,
    close_releases, target_and_last_scaled, no_secret_leaks,
)
