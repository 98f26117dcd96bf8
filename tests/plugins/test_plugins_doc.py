"""docs/plugins.md stays true: its worked example passes the contract suite, with the doc's own
test code, and the real loader takes it; what the doc says of the built-in plugins matches them."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from docktor.agent.config.load import load_config, summarize
from docktor.tools import registry
from docktor.tools.sdk import Executor
from docktor.tools.testing import SOURCE_CHECKS
from tests.support.peers import REPO

DOC = REPO / "docs" / "plugins.md"


def block_after(marker: str) -> tuple[str, int]:
    """The fenced code block right after the HTML comment ``<!-- marker ... -->``, and the line it starts on."""
    lines = DOC.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"<!-- {marker}"))
    assert lines[at + 1].startswith("```"), f"docs/plugins.md: no code block right after the {marker!r} comment"
    end = next(i for i in range(at + 2, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[at + 2 : end]) + "\n", at + 2


def example_module() -> types.ModuleType:
    """The worked example, as the module ``docktor_jsonqueue`` (tracebacks point into docs/plugins.md)."""
    code, first_line = block_after("worked example")
    module = types.ModuleType("docktor_jsonqueue")
    sys.modules[module.__name__] = module  # pydantic resolves the settings' annotations through it
    exec(compile("\n" * first_line + code, str(DOC), "exec"), module.__dict__)
    return module


def test_the_worked_example_passes_the_contract_suite_with_the_docs_own_test(tmp_path: Path) -> None:
    """The two blocks as a plugin author would save them: the plugin's module and its test module."""
    (tmp_path / "docktor_jsonqueue.py").write_text(block_after("worked example")[0])
    (tmp_path / "test_jsonqueue_contract.py").write_text(block_after("contract example")[0])
    done = subprocess.run(
        # no pytest-asyncio: the suite runs its own event loops
        [sys.executable, "-m", "pytest", "test_jsonqueue_contract.py", "-q", "-rfEsp", "-p", "no:cacheprovider", "-p", "no:asyncio"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    for check in SOURCE_CHECKS:  # every rule ran, and passed: none skipped for want of a peer
        assert f"PASSED test_jsonqueue_contract.py::test_jsonqueue_contract[jsonqueue-{check}]" in report, report
    assert re.search(rf"\b{len(SOURCE_CHECKS)} passed\b", report) and "skipped" not in report, report


def test_the_real_loader_takes_the_worked_example(tmp_path: Path) -> None:
    plugin = example_module().JsonQueueSource
    assert plugin.kind == "jsonqueue"
    (tmp_path / "docktor.yaml").write_text(
        "services:\n"
        "  - name: reports\n"
        "    executor: local\n"
        "    command: [sleep, '60']\n"
        "    policy: target\n"
        "    target_per_replica: 20\n"
        "    queue: {kind: jsonqueue, url: 'http://127.0.0.1:8080/stats', token_env: STATS_TOKEN, timeout: 1s}\n"
    )
    with registry.installed(plugin):
        config = load_config(tmp_path / "docktor.yaml")
        line = summarize(config.services[0])
    assert "queue jsonqueue http://127.0.0.1:8080/stats" in line
    assert config.services[0].sources[0].settings.token_env == "STATS_TOKEN"


def intro() -> str:
    return DOC.read_text().split("\n## ", 1)[0]


@pytest.mark.parametrize("group", [registry.SOURCES, registry.EXECUTORS])
def test_the_doc_names_every_built_in_plugin(group: str) -> None:
    kinds = registry.source_kinds() if group == registry.SOURCES else registry.executor_kinds()
    missing = [k for k in kinds if f"`{k}`" not in intro()]
    assert not missing, f"docs/plugins.md's introduction does not name {missing}"


@pytest.mark.parametrize("hook", ["target", "last_scaled"])
def test_the_hooks_table_names_every_executor_implementing_a_hook(hook: str) -> None:
    row = next(line for line in DOC.read_text().splitlines() if line.startswith("| `") and f"Executor.{hook}()" in line)
    implementing = sorted(
        kind for kind in registry.executor_kinds()
        if getattr(registry.executor_plugin(kind), hook) is not getattr(Executor, hook)
    )
    named = sorted(kind for kind in registry.executor_kinds() if f"`{kind}`" in row.rsplit("|", 2)[-2])
    assert named == implementing, f"the {hook}() row names {named}; the executors implementing it are {implementing}"
