"""The check every URL setting gets: a scheme the plugin speaks, a host, no credentials, nothing after the path."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from pydantic import AfterValidator

__all__ = ["check_url", "url_setting"]


def check_url(value: str, schemes: tuple[str, ...], expected: str) -> SplitResult:
    """``value`` split into its parts, for a settings validator; ``ValueError`` when it is not a
    URL of one of ``schemes`` with a host, or when it carries credentials (they come from the
    environment, through the ``*_env`` settings), a query or a fragment (settings say what they
    would). ``expected`` completes "must be ...", e.g. ``"an http(s) URL such as
    http://127.0.0.1:9090"``. No message repeats the value: it may hold a password."""
    try:
        parts = urlsplit(value)
        hostname, _ = parts.hostname, parts.port  # parsed lazily: a port out of range raises here, not at read time
    except ValueError:
        raise ValueError(f"not a URL: must be {expected}") from None
    if parts.scheme not in schemes or not hostname:
        raise ValueError(f"must be {expected}")
    if parts.username or parts.password:
        raise ValueError("no credentials in the URL; name environment variables in the *_env settings instead")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment in the URL")
    return parts


def url_setting(schemes: tuple[str, ...], expected: str) -> AfterValidator:
    """The check of a URL setting, for its annotation: ``url: Annotated[str, url_setting(("http",
    "https"), "an http(s) URL such as http://127.0.0.1:9090")]``. The value is :func:`check_url`'s,
    kept without a trailing slash (a path is appended to it)."""

    def check(value: str) -> str:
        check_url(value, schemes, expected)
        return value.rstrip("/")

    return AfterValidator(check)
