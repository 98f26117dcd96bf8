"""Secrets stay secret: scrub credentials out of every text Docktor shows, logs or records.

Credentials reach Docktor three ways, and each is scrubbed wherever text leaves the process
(errors, stderr, the decision log, ``status.json``, the LLM's prompt and tools):

* **in a URL**: the user-info of ``scheme://user:password@host`` becomes ``***@``, and the value of
  a secret-looking query parameter (``?token=…``, ``&password=…``, ``api_key=…``) becomes ``***``;
* **named by the config** (``password_env: NATS_PASSWORD``, ``llm.api_key_env``, any setting whose
  name ends in ``_env`` except user names), or interpolated from a variable whose name says it
  holds one (``${NATS_PASSWORD}``, ``${API_TOKEN}``): the loader :func:`register` s each value;
  every registered value is replaced by ``***`` wherever it appears;
* the LLM key the advisor reads (registered too).

Light on purpose (only ``re``): the CLI's error path imports it, and ``docktor --help`` must stay fast.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

MASK = "***"
#: values shorter than this are not treated as secrets: masking "a" or "1" everywhere would
#: garble every message, and a real credential is longer
MIN_SECRET_LEN = 4

_USERINFO = re.compile(r"(?<=//)[^/@\s'\"]*@")
_QUERY_SECRET = re.compile(
    r"(?i)(?<=[?&;])((?:[a-z0-9_.-]*(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|credentials?|auth))=)[^&#\s'\"]+"
)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register(value: str | None) -> None:
    """Treat ``value`` as a secret from now on, in every text :func:`redact` sees."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LEN:
        return
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}  # as written, JSON- and repr-escaped
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(f for f in forms if len(f) >= MIN_SECRET_LEN)
        # longest first, so a secret containing another is masked whole
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def forget_all() -> None:
    """For tests: drop every registered secret."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """``text`` with URL credentials and every registered secret replaced by ``***``."""
    if not text:
        return text
    if "//" in text and "@" in text:
        text = _USERINFO.sub(MASK + "@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def redact_obj(value: Any) -> Any:
    """``value`` with :func:`redact` applied to every string in it (keys too), recursively."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_obj(k): redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value


def secret_names(settings: Any) -> list[str]:
    """The environment variables a settings object names as credentials: every ``*_env`` field's
    value, except user names (``user_env``: masking a user called ``docktor`` would garble every line)."""
    names: list[str] = []
    fields = getattr(type(settings), "model_fields", None) or {}
    for field in fields:
        if field.endswith("_env") and "user" not in field:
            value = getattr(settings, field, None)
            if isinstance(value, str) and value:
                names.append(value)
    return names
