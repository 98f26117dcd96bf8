"""docs/architecture.md's tree is the tree: it names every module of agent/, tools/ and
benchmarks/, and every module it names exists; and no file name is used twice, so a name in the
docs (or a traceback) points at one file."""

from __future__ import annotations

import collections
import re
from pathlib import Path

from tests.support.peers import REPO

CODE = ("agent", "tools", "benchmarks")


def tree() -> str:
    text = (REPO / "docs" / "architecture.md").read_text()
    start = text.index("```\ntools/")
    return text[start:text.index("```", start + 3)]


def modules(*folders: str) -> list[Path]:
    return [p for f in folders for p in (REPO / f).rglob("*.py") if p.name != "__init__.py" and "__pycache__" not in p.parts]


def test_the_tree_names_every_module_and_only_modules_that_exist() -> None:
    named = set(re.findall(r"\b([a-z_][a-z0-9_]*\.py)\b", tree()))  # protoc's modules end in _pb2
    real = {p.name for p in modules(*CODE)}
    assert not real - named, f"modules the tree in docs/architecture.md does not name: {sorted(real - named)}"
    assert not named - real, f"the tree in docs/architecture.md names modules that do not exist: {sorted(named - real)}"


def test_the_tree_names_every_package() -> None:
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "agent").rglob("__init__.py")} | {
        str(p.parent.relative_to(REPO)) for p in (REPO / "tools").rglob("__init__.py")}
    text = tree()
    missing = [p for p in sorted(packages) if p.rsplit("/", 1)[-1] + "/" not in text]
    assert not missing, f"packages the tree does not show: {missing}"


def test_no_file_name_is_used_twice() -> None:
    """The examples are applications of their own (each has its worker.py); the third-party plugin
    package in tests/plugins is one too."""
    files = modules(*CODE, "tests")
    files = [p for p in files if "docktor-textfile" not in p.parts and p.name != "conftest.py"]
    seen = collections.defaultdict(list)
    for p in files:
        seen[p.name].append(str(p.relative_to(REPO)))
    twice = {name: where for name, where in seen.items() if len(where) > 1}
    assert not twice, f"file names used more than once: {twice}"
