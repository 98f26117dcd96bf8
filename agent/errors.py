"""User-facing errors: one line each, naming the field or argument, exit code 2."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. "services[0].rules.scale_up_when[1].op", or a file name
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UsageError(Exception):
    """Bad input from the user. The CLI prints each problem on one line and exits with 2."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))
