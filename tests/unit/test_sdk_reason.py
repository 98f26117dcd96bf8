"""``docktor.tools.sdk.reason``: why an error happened, in one line, for a message that already says
what failed and where; never a password, a control character or a second line."""

from __future__ import annotations

import asyncio
import socket

import pytest

from docktor.tools.sdk import SourceError, reason


async def test_a_refused_connection_is_said_in_the_system_s_words_without_the_address() -> None:
    with socket.socket() as s:  # a port nothing listens on: a real refusal
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError) as info:
        await asyncio.open_connection("127.0.0.1", port)
    assert str(port) in str(info.value)  # asyncio's own text repeats the address...
    assert reason(info.value) == "Connection refused"  # ...which the caller names already


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (ValueError("bad answer\nTraceback (most recent call last): ..."), "bad answer"),
        (OSError("cannot reach http://user:pw-canary@h:9090/x"), "cannot reach http://***@h:9090/x"),
        (ValueError("colour \x1b[31mred\x1b[0m answer"), "colour [31mred [0m answer"),
        (KeyError("state"), "'state'"),
        (TimeoutError(), "timed out"),
        (RuntimeError(), "RuntimeError"),
        (SourceError("  \n  "), "SourceError"),
    ],
)
def test_the_first_line_scrubbed(error: BaseException, said: str) -> None:
    assert reason(error) == said
