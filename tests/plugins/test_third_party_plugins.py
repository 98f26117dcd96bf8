"""Plugins from other packages: found through their entry point, validated, and used, with no change to Docktor.

``tests/plugins/docktor-textfile`` is a package of its own (its own pyproject.toml, importing only
the SDK). It is installed with pip into a temporary folder, exactly as a user would install a
third-party plugin next to Docktor, and the real CLI runs with that folder on its path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from docktor.tools.registry import executor_kinds, source_kinds
from tests.support.cli import docktor
from tests.support.peers import REPO

PLUGIN = REPO / "tests" / "plugins" / "docktor-textfile"

CONFIG = """
mode: autonomous
state_dir: {state}
services:
  - name: batch
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(60)"]
    min_replicas: 1
    max_replicas: 6
    check_interval: 1s
    policy: rules
    cooldown_up: 0s
    sources:
      - name: jobs
        kind: textfile
        path: metrics.txt
        metrics:
          jobs.waiting: jobs the scheduler has queued
          jobs.oldest_age_seconds: age of the oldest queued job
    rules:
      scale_up_when:
        - {{metric: jobs.waiting, op: ">", value: 100}}
      scale_down_when:
        - {{metric: {down_metric}, op: "<=", value: 10}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin package installed by pip into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(p.name.startswith("docktor_textfile-") and p.suffix == ".dist-info" for p in target.iterdir())
    return target


def plugin_path(site: Path | None) -> dict[str, str | None]:
    """The CLI's environment: the plugin's folder on PYTHONPATH, or no PYTHONPATH at all."""
    return {"PYTHONPATH": str(site) if site is not None else None}


def write_config(tmp_path: Path, down_metric: str = "jobs.waiting") -> Path:
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(CONFIG.format(state=tmp_path / "state", python=sys.executable, down_metric=down_metric))
    return cfg


def test_the_built_ins_are_registered_through_the_same_entry_points() -> None:
    assert "nats" in source_kinds()
    assert {"compose", "local"} <= set(executor_kinds())


def test_a_plugin_package_is_found_validated_and_decides(tmp_path: Path, site: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "metrics.txt").write_text("# written by the scheduler\njobs.waiting 450\njobs.oldest_age_seconds 93\nother 1\n")

    ok = docktor("validate", "--config", str(cfg), cwd=tmp_path, env=plugin_path(site))
    assert ok.returncode == 0, ok.stderr
    assert "queue textfile metrics.txt" in ok.stdout

    run = docktor("decide", "--config", str(cfg), "--once", "--dry-run", "--json", cwd=tmp_path, env=plugin_path(site))
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["observations"]["jobs.waiting"] == 450
    assert record["observations"]["jobs.oldest_age_seconds"] == 93
    assert "other" not in record["observations"]
    assert record["matched_rules"] == ["jobs.waiting 450 > 100"]
    assert record["decision"] == "scale_up" and record["executed"] is False


def test_a_rule_on_a_metric_the_plugin_does_not_provide_is_rejected(tmp_path: Path, site: Path) -> None:
    cfg = write_config(tmp_path, down_metric="jobs.waitng")
    bad = docktor("validate", "--config", str(cfg), cwd=tmp_path, env=plugin_path(site))
    assert bad.returncode == 2
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith(
        "error: services[0].rules.scale_down_when[0].metric: unknown metric 'jobs.waitng' (did you mean 'jobs.waiting'?)"
    )
    assert "available: jobs.oldest_age_seconds, jobs.waiting, replicas.desired" in line


def test_without_the_package_the_kind_is_unknown_and_the_installed_ones_are_listed(tmp_path: Path) -> None:
    bad = docktor("validate", "--config", str(write_config(tmp_path)), cwd=tmp_path, env=plugin_path(None))
    assert bad.returncode == 2
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith("error: services[0].sources[0].kind: unknown source kind 'textfile' (installed: ")
    assert "nats" in line and "Traceback" not in bad.stderr
