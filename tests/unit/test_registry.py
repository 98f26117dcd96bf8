"""A plugin's kind is declared once (its Settings' ``kind`` Literal), and the registry refuses a
plugin installed under an entry-point name that says otherwise."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Literal

import pytest

from docktor.tools import registry
from docktor.tools.sdk import Metrics, PluginSettings, Source
from docktor.tools.sources.nats import NatsSource
from docktor.tools.testing import FakeExecutor, FakeSource


class EchoSettings(PluginSettings):
    kind: Literal["echo"]


def test_the_kind_is_read_from_the_settings_literal() -> None:
    class Echo(Source[EchoSettings]):
        Settings = EchoSettings

        async def read(self) -> Metrics:
            return {}

    assert Echo.kind == "echo"
    assert NatsSource.kind == "nats"


def test_a_second_declaration_that_disagrees_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Echo2.kind is 'other' but its Settings say 'echo': declare it once, in Settings"):
        class Echo2(Source[EchoSettings]):
            Settings = EchoSettings
            kind = "other"

            async def read(self) -> Metrics:
                return {}


def test_settings_without_a_literal_kind_are_refused() -> None:
    class Loose(PluginSettings):
        kind: str

    with pytest.raises(TypeError, match=r"Vague.Settings must declare its kind as kind: Literal\[\"<name>\"\]"):
        class Vague(Source[Loose]):
            Settings = Loose

            async def read(self) -> Metrics:
                return {}


def test_an_entry_point_named_otherwise_than_the_plugin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real entry point (the NATS plugin) installed under the name "jetstream"."""
    ep = EntryPoint(name="jetstream", value="docktor.tools.sources.nats:NatsSource", group=registry.SOURCES)
    monkeypatch.setattr(registry, "_group", lambda group: {"jetstream": ep} if group == registry.SOURCES else {})
    with pytest.raises(registry.PluginError) as e:
        registry.source_plugin("jetstream")
    assert str(e.value) == ("source kind plugin 'jetstream' (docktor.tools.sources.nats:NatsSource) declares kind 'nats' "
                            "in its Settings: its entry point must be named 'nats'")


def test_installed_plugins_are_found_while_the_block_runs() -> None:
    assert "fake" not in registry.source_kinds()
    with registry.installed(FakeSource, FakeExecutor):
        assert registry.source_plugin("fake") is FakeSource and registry.executor_plugin("fake") is FakeExecutor
        assert "fake" in registry.source_kinds() and "fake" in registry.executor_kinds()
    assert "fake" not in registry.source_kinds() and "fake" not in registry.executor_kinds()
    with pytest.raises(registry.PluginError, match="unknown source kind 'fake'"):
        registry.source_plugin("fake")
