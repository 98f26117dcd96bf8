"""The local executor's settings, and the environment its replicas inherit (an allow-list,
never Docktor's own credentials)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from docktor.tools.sdk import PluginSettings, Seconds

#: Variables a replica inherits from the daemon even when ``env_passthrough`` is empty: what a
#: program needs to find itself, its locale and its time zone, and Python's own switches. Nothing
#: here names a credential; a proxy URL (``HTTP_PROXY``) can hold one, so it is not inherited.
DEFAULT_PASSTHROUGH: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR",
    "PYTHON*", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR",
)

_ENV_PATTERN = re.compile(r"^[A-Za-z0-9_*?]+$")


def _split_command(value: Any) -> Any:
    return shlex.split(value) if isinstance(value, str) else value


def _check_pattern(value: str) -> str:
    if not _ENV_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a variable name or a pattern such as MYAPP_* (letters, digits, _, * and ?)")
    return value


class LocalSettings(PluginSettings):
    """``executor: local``: run ``command`` N times as processes of the daemon's."""

    kind: Literal["local"]
    #: the replica's program and arguments: a list, or a string split like a shell would (no shell runs it)
    command: Annotated[list[str], BeforeValidator(_split_command), Field(min_length=1)]
    #: environment variables for the replicas (they win over inherited ones)
    env: dict[str, str] = Field(default_factory=dict)
    #: more of the daemon's variables replicas inherit, by name or pattern (``MYAPP_*``), on top of
    #: :data:`DEFAULT_PASSTHROUGH`; Docktor's own credentials are never inherited
    env_passthrough: list[Annotated[str, AfterValidator(_check_pattern)]] = Field(default_factory=list)
    #: the replicas' working directory, relative to the config file's folder (default: that folder)
    working_dir: Path | None = None
    #: SIGTERM, then SIGKILL after this long
    stop_grace_period: Seconds = 10.0


def replica_environment(
    settings: LocalSettings, secret_env: frozenset[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What every replica of a service inherits and is given (before its ``DOCKTOR_*`` variables)."""
    environ = os.environ if environ is None else environ
    patterns = (*DEFAULT_PASSTHROUGH, *settings.env_passthrough)
    inherited = {
        k: v for k, v in environ.items() if k not in secret_env and any(fnmatchcase(k, p) for p in patterns)
    }
    return {**inherited, **settings.env}
