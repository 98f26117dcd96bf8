"""User-facing errors: one line each, naming the field or argument, exit code 2."""

from __future__ import annotations

import re
from dataclasses import dataclass

from docktor.agent.redact import redact

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: a problem is one line: a value echoed back is never allowed to make it a page
MAX_PROBLEM_CHARS = 400


def one_line_text(text: str) -> str:
    """Control characters escaped (a key with a newline stays on its line), credentials scrubbed, length capped."""
    text = redact(_CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text))
    if len(text) <= MAX_PROBLEM_CHARS:
        return text
    cut = text[: MAX_PROBLEM_CHARS - 1]
    # at a space or after a comma, never inside a word (a name cut in half reads as another name)
    at = max(cut.rfind(" "), cut.rfind(","))
    return (cut[: at + 1] if at > MAX_PROBLEM_CHARS // 2 else cut).rstrip(" ,") + "…"


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. "services[0].rules.scale_up_when[1].op", or a file name
    message: str

    def __str__(self) -> str:
        return one_line_text(f"{self.path}: {self.message}" if self.path else self.message)


class UsageError(Exception):
    """Bad input from the user. The CLI prints each problem on one line and exits with 2."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))
