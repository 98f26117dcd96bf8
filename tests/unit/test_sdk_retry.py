"""``docktor.tools.sdk.retrying``: a transient failure is tried again, a few times within a deadline,
then said in one line; a permanent one, or any SourceError, is raised at once; a bug is not hidden."""

from __future__ import annotations

import asyncio

import pytest

from docktor.tools.sdk import Permanent, SourceError, Transient, Unavailable, env_secret, retrying
from docktor.tools.sdk.retry import ATTEMPTS


class Script:
    """An attempt that fails as scripted, one outcome per call, and counts its calls."""

    def __init__(self, *outcomes: BaseException | str) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_a_success_is_returned_at_once() -> None:
    attempt = Script("42")
    assert await retrying(attempt, deadline=5) == "42"
    assert attempt.calls == 1


async def test_a_transient_failure_is_tried_again() -> None:
    attempt = Script(Transient("refused"), Transient("refused"), "ok")
    assert await retrying(attempt, deadline=5) == "ok"
    assert attempt.calls == 3


async def test_the_last_transient_failure_is_said_after_the_last_attempt() -> None:
    attempt = Script(*(Transient(f"cannot reach h:1: refused ({i})") for i in range(ATTEMPTS + 1)))
    with pytest.raises(Unavailable, match=r"^cannot reach h:1: refused \(2\)$") as info:
        await retrying(attempt, deadline=5)
    assert attempt.calls == ATTEMPTS == 3
    assert isinstance(info.value, SourceError)  # what the daemon records, in one line
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback


async def test_attempts_can_be_fewer() -> None:
    attempt = Script(Transient("a"), Transient("b"), "c")
    with pytest.raises(Unavailable, match="^b$"):
        await retrying(attempt, deadline=5, attempts=2)


async def test_a_permanent_failure_is_raised_at_once_as_it_is() -> None:
    missing = Permanent("queue 'jobs' not found")
    attempt = Script(missing, "never")
    with pytest.raises(Permanent) as info:
        await retrying(attempt, deadline=5)
    assert info.value is missing and attempt.calls == 1
    assert not isinstance(info.value, Unavailable)  # a second way of reading is not tried on it


async def test_any_source_error_is_final_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRY_TEST_UNSET", raising=False)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        return env_secret("RETRY_TEST_UNSET", "password_env")

    with pytest.raises(SourceError, match=r"RETRY_TEST_UNSET \(password_env\) is not set"):
        await retrying(attempt, deadline=5)
    assert calls == 1


async def test_a_bug_propagates_unchanged_and_is_not_retried() -> None:
    attempt = Script(KeyError("counters"), "never")
    with pytest.raises(KeyError):
        await retrying(attempt, deadline=5)
    assert attempt.calls == 1


async def test_an_attempt_that_used_the_deadline_is_not_repeated() -> None:
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # the attempt's own (bounded) call, longer than the deadline
        raise Transient("timed out")

    with pytest.raises(Unavailable, match="timed out"):
        await retrying(slow, deadline=0.01)
    assert calls == 1  # the next tick is the retry

