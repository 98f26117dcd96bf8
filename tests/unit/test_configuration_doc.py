"""docs/configuration.md is checked against the schema: its tables name every key the models have
and no other, the x-docktor table says what the Compose translation does, and its Compose example
loads and fails with the errors it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docktor.agent.config.compose_file import SERVICE_OWN, TOP_NOT_HERE
from docktor.agent.config.load import parse_config
from docktor.agent.config.model import DocktorConfig, LLMConfig, ServiceConfig
from docktor.agent.problems import UsageError
from docktor.tools.executors.compose import ComposeSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def section(title: str) -> str:
    """The text under ``## title`` (or ``### title``) up to the next heading of any level."""
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", DOC, re.S | re.M)
    assert m is not None, f"no section {title!r} in docs/configuration.md"
    return m.group(1)


def table_keys(text: str) -> list[list[str]]:
    """Per table row (header and rule left out), the backticked names in its first column."""
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    return [re.findall(r"`([^`]+)`", row.split(" | ")[0]) for row in rows]


def fields(model: type, *, dropped: tuple[str, ...] = ()) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items() if not f.exclude and n not in dropped}


def test_the_top_level_table_names_every_top_level_key() -> None:
    named = {key.split(".")[0] for row in table_keys(section("Top level")) for key in row}
    # compose_file: the Go Docktor's layout, read by agent/config/compat.py
    assert named == fields(DocktorConfig) | {"compose_file"}


def test_the_service_table_names_every_service_key() -> None:
    named = {key.split(".")[0] for row in table_keys(section("A service")) for key in row}
    # executor, queue and sources: the plugins' blocks, which the loader takes out before ServiceConfig
    assert named == fields(ServiceConfig) | {"executor", "queue", "sources"}


def test_the_llm_block_names_every_llm_setting() -> None:
    paragraph = section("The `llm` block").split("\n\n")[0]
    assert fields(LLMConfig) <= set(re.findall(r"`([a-z_]+)`", paragraph))


def test_the_x_docktor_table_is_what_the_translation_does() -> None:
    rows = table_keys(section("In a Compose file: `x-docktor`"))
    top, service, *refused, top_refused = rows
    assert set(top) == fields(DocktorConfig, dropped=("services",))
    assert set(service) == fields(ComposeSettings, dropped=("kind", "compose_file", "compose_service"))
    assert [key for (key,) in refused] == list(SERVICE_OWN)
    assert set(top_refused) == set(TOP_NOT_HERE)


def test_the_compose_example_loads_and_fails_as_shown(tmp_path: Path) -> None:
    text = section("In a Compose file: `x-docktor`")
    example = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    cfg = parse_config(example, tmp_path / "compose.yaml", {})
    assert [s.name for s in cfg.services] == ["worker"] and cfg.from_compose
    shown = re.search(r"```\n(error: .*?)```", text, re.S).group(1).splitlines()  # type: ignore[union-attr]
    broken = example.replace("max_replicas: 8", "max_replicas: 0").replace("mode: advisory", "mode: advisor")
    with pytest.raises(UsageError) as e:
        parse_config(broken, Path("compose.yaml"), {})
    assert [f"error: {p}" for p in e.value.problems] == shown


def test_the_readmes_compose_way_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = readme.split("### The Compose way\n", 1)[1].split("\n### ", 1)[0]
    example = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    cfg = parse_config(example, tmp_path / "compose.yaml", {})
    assert [s.name for s in cfg.services] == ["worker"] and cfg.mode == "advisory"
