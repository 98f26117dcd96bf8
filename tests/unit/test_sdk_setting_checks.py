"""The checks a plugin's settings share: a URL setting (``check_url``, ``url_setting``) and settings
that go together (``go_together``). A message never repeats a value that may hold a password."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal

import pytest
from pydantic import ValidationError

from docktor.tools.sdk import PluginSettings, TlsSettings, check_url, go_together, url_setting

SECRET = "hunter2-canary"


class Web(PluginSettings):
    """A plugin's settings, as a source declares them."""

    kind: Literal["web"] = "web"
    url: Annotated[str, url_setting(("http", "https"), "an http(s) URL such as http://127.0.0.1:9090")] = "http://127.0.0.1:9090"


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port"),
    [("http://127.0.0.1:9090", "http", "127.0.0.1", 9090), ("https://prom.example/prefix/", "https", "prom.example", None),
     ("http://[::1]:15672", "http", "::1", 15672)],
)
def test_a_good_url_is_split(url: str, scheme: str, host: str, port: int | None) -> None:
    parts = check_url(url, ("http", "https"), "an http(s) URL")
    assert (parts.scheme, parts.hostname, parts.port) == (scheme, host, port)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://host", "must be an http(s) URL"),
        ("host:9090", "must be an http(s) URL"),
        ("http://", "must be an http(s) URL"),  # no host
        (f"http://user:{SECRET}@host", "no credentials in the URL"),
        (f"http://{SECRET}@host", "no credentials in the URL"),
        (f"http://host/?token={SECRET}", "no query or fragment"),
        (f"http://host/#{SECRET}", "no query or fragment"),
        (f"http://host:{SECRET}", "not a URL"),  # a port that is not one raises at parse time, not at read time
        ("http://host:99999", "not a URL"),
    ],
)
def test_a_bad_url_is_refused_without_repeating_it(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)) as info:
        check_url(url, ("http", "https"), "an http(s) URL")
    assert SECRET not in str(info.value)


def test_a_url_setting_is_checked_where_it_is_declared_and_kept_without_a_trailing_slash() -> None:
    assert Web.model_validate({"url": "https://prom.example/prefix/"}).url == "https://prom.example/prefix"
    with pytest.raises(ValidationError) as info:
        Web.model_validate({"url": "ftp://host"})
    (error,) = info.value.errors()
    assert error["loc"] == ("url",) and "must be an http(s) URL such as http://127.0.0.1:9090" in error["msg"]


def test_settings_that_go_together_are_all_given_or_all_left_out() -> None:
    go_together(SimpleNamespace(user_env=None, password_env=None), "user_env", "password_env")
    go_together(SimpleNamespace(user_env="U", password_env="P"), "user_env", "password_env")
    for half in (SimpleNamespace(user_env="U", password_env=None), SimpleNamespace(user_env=None, password_env="P")):
        with pytest.raises(ValueError, match="^user_env and password_env go together$"):
            go_together(half, "user_env", "password_env")
    # as a settings model uses it: the tls: block's client certificate and key
    assert TlsSettings.model_validate({"cert_file": "c.pem", "key_file": "k.pem"}).files() == {"cert_file": Path("c.pem"), "key_file": Path("k.pem")}
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        TlsSettings.model_validate({"cert_file": "c.pem"})
