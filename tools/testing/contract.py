"""The plugin contract suite: one parametrized pytest test per plugin family, one item per case and rule.

A plugin author gives each plugin a :class:`~docktor.tools.testing.cases.Case` (the plugin and the
name of a fixture returning its peers) and binds the suite to a test name in a test module::

    from docktor.tools.testing import Case, SourcePeer, source_contract

    @pytest.fixture(scope="module")
    def kafka_peer() -> SourcePeer: ...

    test_kafka_contract = source_contract(Case(KafkaSource, peer="kafka_peer"))

Each check runs in a thread of its own with its own event loop: a plugin that blocks its loop,
or ignores every bound, fails that check with a message instead of hanging the suite. pytest is
imported here only when a suite is built, so importing the fakes needs no pytest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from docktor.tools.testing.cases import Case, Check, NotApplicable, Run, Violation
from docktor.tools.testing.executor_checks import EXECUTOR_CHECKS
from docktor.tools.testing.source_checks import SOURCE_CHECKS

#: the longest one check may take, its plugin calls' own bounds included
CHECK_BOUND_S = 280.0


def source_contract(*cases: Case) -> Callable[..., None]:
    """A pytest test running every source check (:data:`SOURCE_CHECKS`) on every case."""
    return _suite("source", cases, SOURCE_CHECKS)


def executor_contract(*cases: Case) -> Callable[..., None]:
    """A pytest test running every executor check (:data:`EXECUTOR_CHECKS`) on every case."""
    return _suite("executor", cases, EXECUTOR_CHECKS)


def _suite(family: str, cases: tuple[Case, ...], checks: Mapping[str, Check]) -> Callable[..., None]:
    import pytest

    if not cases:
        raise ValueError(f"{family}_contract() needs at least one Case")
    for case in cases:
        unknown = sorted(set(case.xfail) - set(checks))
        if unknown:
            raise ValueError(f"case {case.name!r}: no {family} check named {', '.join(unknown)} (known: {', '.join(checks)})")
    params = [
        pytest.param(
            case, name, id=f"{case.name}-{name}",
            marks=[*case.marks, *([pytest.mark.xfail(strict=True, reason=case.xfail[name])] if name in case.xfail else [])],
        )
        for case in cases
        for name in checks
    ]

    @pytest.mark.parametrize(("case", "check"), params)
    def test_contract(
        case: Case, check: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, tmp_path: Path,
    ) -> None:
        peer = request.getfixturevalue(case.peer)
        caplog.set_level(logging.DEBUG)
        run = Run(case.plugin, peer, tmp_path, monkeypatch.setenv, lambda: caplog.text)
        try:
            run_in_own_loop(checks[check](run), CHECK_BOUND_S)
        except NotApplicable as e:
            pytest.skip(str(e))

    test_contract.__name__ = test_contract.__qualname__ = f"test_{family}_contract"
    return test_contract


def run_in_own_loop(check: Awaitable[None], bound: float) -> None:
    """Run ``check`` on a new event loop in a thread; a :class:`Violation` if it outlives ``bound``."""
    failed: list[BaseException] = []

    async def main() -> None:
        await check

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # handed to the test's thread, whatever it is
            failed.append(e)

    thread = threading.Thread(target=target, name="docktor-contract", daemon=True)
    thread.start()
    thread.join(bound)
    if thread.is_alive():
        raise Violation(f"the check did not finish within {bound:g} s: the plugin blocks its event loop, or ignores every bound")
    if failed:
        raise failed[0]


__all__ = ["EXECUTOR_CHECKS", "SOURCE_CHECKS", "Case", "Violation", "executor_contract", "run_in_own_loop", "source_contract"]
