"""Errors every plugin raises, and the one-line texts a log or a record shows of any error."""

from __future__ import annotations

import os
import re


class SourceError(Exception):
    """A source could not produce a reading this tick (after its own retries)."""


class ExecutorError(Exception):
    """An executor could not report or change replicas (after its own retries)."""


class Unworkable(str):
    """A line of a plugin's offline ``check`` saying the settings cannot work where ``validate``
    runs: a file they name does not exist, a program is not installed. ``docktor validate`` exits 2
    on one; a plain ``str`` line is only a warning (the config may be right, and for another machine)."""

    __slots__ = ()


def one_line(e: BaseException) -> str:
    """One line for a log or a record: the first line of the message, after the type's name unless
    the error is a :class:`SourceError`/:class:`ExecutorError` (written for the user already)."""
    if isinstance(e, TimeoutError):
        return "timed out"
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return lines[0] if isinstance(e, SourceError | ExecutorError) else f"{type(e).__name__}: {lines[0]}"


def reason(e: BaseException) -> str:
    """Why ``e`` happened, in one line, for a message that already says what failed and where
    (``cannot reach Redis at redis://h:6379/0: Connection refused``): the first line of its own
    message, scrubbed of control characters and of URLs' user-info; for a refused or reset
    connection the system's words for its errno (its message would repeat the address the caller
    already names); :func:`one_line` when it has no message."""
    if isinstance(e, ConnectionError) and e.errno:
        return os.strerror(e.errno)
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return scrub(redact_url(lines[0])) if lines else one_line(e)


#: the user-info of a URL (``user:password@``), for :func:`redact_url` and the settings' checks
_USERINFO = re.compile(r"(?<=//)[^/@\s]*@")


def redact_url(text: str) -> str:
    """Every ``scheme://user:password@host`` in ``text`` with the user-info replaced by ``***@``."""
    return _USERINFO.sub("***@", text)


#: C0 control characters and DEL: a peer's text may carry them (a terminal escape, a forged newline)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def scrub(text: str, *, escape: bool = False) -> str:
    """``text`` safe for one line of a log, a table or a record: every control character replaced
    by a space (runs collapse), or with ``escape`` shown as its escape (``\\n``, ``\\x1b``), for
    an error that quotes what the user typed."""
    if escape:
        return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)
    return " ".join(_CONTROL.sub(" ", text).split())
