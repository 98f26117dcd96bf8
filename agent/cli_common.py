"""What every ``docktor`` command shares: bad input is one line per problem and exit 2.

Nothing prints a traceback unless ``DOCKTOR_DEBUG=1``; an unexpected error is one line, exit 1.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from agent.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Map UsageError to one ``error:`` line per problem + exit 2; anything else to one line + exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            for p in e.problems:
                print(f"error: {p}", file=sys.stderr)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as e:
            if os.environ.get("DOCKTOR_DEBUG") == "1":
                raise
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
