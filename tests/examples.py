"""Helpers for the examples' end-to-end tests: the real daemon on an example's own docktor.yaml,
its decision log, and waiting on conditions (never on sleeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from docktor.agent.runtime.decision_log import read_records

DOCKTOR = Path(sys.executable).with_name("docktor")


def example_config(example: Path, tmp: Path, **overrides: Any) -> Path:
    """The example's docktor.yaml, unchanged but for where its state and compose file live."""
    doc = yaml.safe_load((example / "docktor.yaml").read_text())
    doc["state_dir"] = str(tmp / "state")
    doc["compose_file"] = str(example / "docker-compose.yaml")
    doc.update(overrides)
    path = tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextmanager
def daemon(config: Path, env: dict[str, str], *args: str) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """``docktor daemon start --foreground``; yields a reader of its decision log; stops it on exit."""
    tmp = config.parent
    out = tmp / "daemon.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [str(DOCKTOR), "daemon", "start", "--config", str(config), "--foreground", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )
        decisions = tmp / "state" / "decisions.jsonl"

        def read() -> list[dict[str, Any]]:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited with {proc.returncode}:\n{out.read_text()}")
            if not decisions.exists():
                return []
            return list(read_records(decisions))  # one per decision: intent and outcome lines merged

        try:
            yield read
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_until(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(every)


def executed(records: list[dict[str, Any]], decision: str) -> list[dict[str, Any]]:
    return [r for r in records if r["decision"] == decision and r["executed"]]


def outcomes_logged(records: list[dict[str, Any]]) -> bool:
    """Every executed decision has its outcome line (an intent alone reads as status ``unknown``)."""
    return all((r.get("outcome") or {}).get("status") != "unknown" for r in records if r.get("executed"))


def errors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if (r.get("outcome") or {}).get("status") == "error"]
