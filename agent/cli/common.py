"""What every ``docktor`` command shares: the ``--config`` option, loading it, and error handling.

Bad input is one ``error:`` line per problem and exit 2. Nothing prints a traceback unless
``DOCKTOR_DEBUG=1``; an unexpected error is one line and exit 1. This module stays light (no
pydantic, no SDKs): commands import what they need when they run, so ``docktor --help`` is fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from docktor.agent.problems import UsageError

if TYPE_CHECKING:
    from docktor.agent.config.model import DocktorConfig

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", metavar="FILE",
    help="docktor.yaml, or a Compose file with x-docktor blocks (default: docktor.yaml, compose.yaml or docker-compose.yaml here).",
)]
ComposeOpt = Annotated[Path | None, typer.Option(
    "--compose", metavar="FILE", help="A Compose file whose x-docktor blocks are the config (instead of --config).",
)]

#: what is looked for, in this order, when neither --config nor --compose is given: Docktor's own
#: file, then the names ``docker compose`` itself looks for
DEFAULT_FILES = ("docktor.yaml", "compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def config_file(config: Path | None, compose: Path | None = None, *, missing_ok: bool = False) -> Path:
    """The file a command reads: ``--config``, ``--compose`` (which must be a Compose file), or the
    first of :data:`DEFAULT_FILES` in the current folder (said on stderr when it is not the only
    docktor.yaml there could be). ``missing_ok``: none there means docktor.yaml (``daemon stop``
    finds a daemon whose config file has gone)."""
    if config is not None and compose is not None:
        raise UsageError("--compose: give either --config or --compose, not both")
    if config is not None:
        return config
    if compose is not None:
        _must_be_compose(compose)
        return compose
    present = [Path(name) for name in DEFAULT_FILES if Path(name).is_file()]
    if not present and missing_ok:
        return Path(DEFAULT_FILES[0])
    if not present:
        raise UsageError(f"no {', '.join(DEFAULT_FILES[:-1])} or {DEFAULT_FILES[-1]} in {Path.cwd()}: "
                         "give the file with --config (docktor.yaml) or --compose (a Compose file)")
    chosen = present[0]
    if chosen.name != DEFAULT_FILES[0] or len(present) > 1:
        others = f" ({', '.join(map(str, present[1:]))} not read)" if len(present) > 1 else ""
        print(f"using {chosen}{others}", file=sys.stderr)
    return chosen


def _must_be_compose(path: Path) -> None:
    """``--compose`` on a docktor.yaml is refused with what to use instead. A file that cannot be
    read is left to the loader, whose message says why."""
    from docktor.agent.config.compose_file import is_compose
    from docktor.tools.sdk.safe_yaml import MAX_BYTES, load_yaml

    try:
        with path.open("rb") as f:
            raw = load_yaml(f.read(MAX_BYTES + 1).decode("utf-8"))
    except Exception:  # any reason it does not read (missing, hostile, not YAML): the loader says it, in one line
        return
    if isinstance(raw, dict) and not is_compose(raw):
        raise UsageError(f"--compose: {path} is not a Compose file (its services: is not a mapping of services); "
                         "for docktor.yaml use --config")


def group(help: str) -> typer.Typer:
    """A command group with the conventions of docker and kubectl: ``-h`` is ``--help``, plain
    help text (no boxes, no ``<bool>`` on flags), and the group's help when called alone."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


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
            from docktor.agent.redact import redact
            from docktor.tools.sdk import one_line

            # An error that names the user's own setup (an unsafe state_dir) says so with exit 2.
            setup = getattr(e, "exit_code", None) == 2
            print(f"error: {redact(str(e) if setup else one_line(e))}", file=sys.stderr)
            raise typer.Exit(2 if setup else 1) from None

    return wrapper  # type: ignore[return-value]


def load(path: Path, *, check_llm: bool = False) -> DocktorConfig:
    """Load the config and print its warnings; with ``check_llm``, also resolve the LLM endpoint."""
    from docktor.agent.cli.render import warn
    from docktor.agent.config.load import load_config

    config = load_config(path)
    for w in config.warnings:
        warn(w)
    if check_llm and config.llm.provider != "none":
        from docktor.agent.advisor.client import config_endpoint

        config_endpoint(config, os.environ)
    return config


def check_before_start(config: DocktorConfig) -> None:
    """What ``daemon start`` and ``docktor keda`` check before they start: a refusal (an executor's
    backend proved the settings can never work) is one line each and exit 2; what ``validate``
    calls an error (a program not installed, a variable unset) is a warning here, because the other
    services run anyway and each tick's record says what fails."""
    from docktor.agent.cli.render import warn
    from docktor.agent.config.checks import offline_checks

    found = offline_checks(config)
    if found.refusals:
        raise UsageError(found.refusals)
    for problem in found.problems:
        warn(str(problem))
