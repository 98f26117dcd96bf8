"""Plugin settings: the base model, durations, secrets named by environment variable, the
context a plugin runs in, and the ``tls:`` block."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from docktor.tools.sdk.errors import _USERINFO, SourceError, Unworkable, one_line

# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string like ``500ms``, ``10s``, ``5m``, ``1h``; other types pass through."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 500ms, 10s, 5m, 1h)")
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    return value


#: A duration field: ``>= 0`` seconds, written as a number or ``10s``/``5m``/``500ms``.
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, allow_inf_nan=False)]
#: A duration that must be ``> 0``.
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, allow_inf_nan=False)]


# --------------------------------------------------------------------------- secrets

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        # the value is not echoed: someone may have pasted the secret itself here
        raise ValueError("must be the name of an environment variable (the secret itself goes in the environment)")
    return value


#: A setting that names an environment variable holding a secret (``password_env: RABBIT_PASSWORD``).
EnvName = Annotated[str, AfterValidator(_check_env_name)]


def env_secret(name: str, setting: str) -> str:
    """The value of environment variable ``name``; :class:`SourceError` naming it (never a value) when unset."""
    value = os.environ.get(name)
    if value is None:
        raise SourceError(f"environment variable {name} ({setting}) is not set")
    return value


# --------------------------------------------------------------------------- settings and context


def go_together(settings: object, *names: str) -> None:
    """``ValueError`` ("user_env and password_env go together") unless the settings ``names`` are
    all given or all left out; for a settings model's ``model_validator``."""
    given = [getattr(settings, name) is not None for name in names]
    if any(given) and not all(given):
        raise ValueError(f"{' and '.join(names)} go together")


#: the type of a settings error whose input may be a secret: never shown back to the user
SECRET_ERROR = "secret_value"


class PluginSettings(BaseModel):
    """Base of every plugin's ``Settings``: unknown keys are errors, values are immutable.

    A subclass declares ``kind: Literal["<its kind>"]`` and its own fields. Durations use
    :data:`Seconds` / :data:`PositiveSeconds`; secrets are the *names* of environment variables.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_secret_in_errors(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse a secret where a setting names one, before the field's own validation, with an
        error located at the field. A ``*_env`` value that is not a variable name may be the secret
        itself: its error is of type :data:`SECRET_ERROR`, which the config loader never echoes.
        A URL's user-info is refused too (the loader shows URLs with it scrubbed)."""
        key = info.field_name or ""
        if isinstance(value, str):
            if key.endswith("_env") and not _ENV_NAME.match(value):
                raise PydanticCustomError(
                    SECRET_ERROR, "must be the name of an environment variable (the secret itself goes in the environment)"
                )
            if (key == "url" or key.endswith("_url")) and _USERINFO.search(value):
                raise ValueError("no credentials in the URL; name environment variables in the *_env settings instead")
        return value


@dataclass(frozen=True)
class Context:
    """Where a plugin runs: the service it serves and the folders it may use."""

    #: the Docktor service name (``services[].name``)
    service: str
    #: the config file's folder: relative paths in settings are relative to it
    base_dir: Path
    #: a folder the plugin may write to (logs, small files); shared by all plugins of the daemon
    state_dir: Path
    #: names of environment variables that hold Docktor's own credentials (the LLM key, sources'
    #: ``*_env`` settings): an executor never hands them to a replica
    secret_env: frozenset[str] = frozenset()

    def path(self, p: Path) -> Path:
        """``p`` resolved against :attr:`base_dir` when relative."""
        return p if p.is_absolute() else self.base_dir / p


class TlsSettings(BaseModel):
    """A plugin's ``tls:`` block: trust a private CA and/or present a client certificate.

    ``ca_file`` replaces the system's trust store (a self-signed or private-CA server is trusted
    without environment tricks); ``cert_file`` + ``key_file`` are the client certificate for
    servers that require one (mutual TLS). Relative paths are relative to the config file.
    Certificates are always verified, host names included: there is no switch to turn that off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        go_together(self, "cert_file", "key_file")
        return self

    def files(self) -> dict[str, Path]:
        """The files named, by setting (``ca_file`` -> path)."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {k: v for k, v in named.items() if v is not None}

    def missing(self, context: Context) -> list[str]:
        """One :class:`Unworkable` line per named file that does not exist (for a plugin's offline ``check``)."""
        return [
            Unworkable(f"tls.{k}: {context.path(p)} does not exist") for k, p in self.files().items() if not context.path(p).is_file()
        ]

    def ssl_context(self, context: Context) -> ssl.SSLContext:
        """A client-side context that verifies the server (against ``ca_file`` when given).

        Raises :class:`SourceError` naming the setting and file when one cannot be loaded.
        """
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        for key, path in self.files().items():
            if not context.path(path).is_file():
                raise SourceError(f"tls.{key}: {context.path(path)} does not exist")
        try:
            if self.ca_file is not None:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(context.path(self.ca_file)))
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(context.path(self.cert_file)), str(context.path(self.key_file)))
        except (ssl.SSLError, OSError, ValueError) as e:
            raise SourceError(f"tls: cannot load {', '.join(map(str, self.files().values()))}: {one_line(e)}") from None
        return ctx

