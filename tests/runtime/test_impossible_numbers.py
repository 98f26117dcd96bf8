"""Numbers that cannot be (issue 21): a reading outside its metric's domain, and a state file with
times no clock can mean, on the real daemon with in-memory fakes (docktor.tools.testing).

A negative backlog is a broken reading, not an empty queue: it is missing, with the reason, and
missing data never scales in; so is a message time in the year 33658 (issue 23: queue.oldest_age). A state file whose numbers parse but cannot mean anything (the year
33658, 1e300) costs the pieces that hold them, never the daemon's start.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from docktor.agent.config.load import load_config
from docktor.agent.runtime.exporter import DaemonMetrics
from docktor.agent.runtime.supervisor import Supervisor
from docktor.tools import registry
from docktor.tools.sdk import age_since
from docktor.tools.testing import FakeExecutor, FakeFleet, FakeQueue, FakeSource

CONFIG = """
state_dir: state
services:
  - name: {name}
    executor: fake
    queue: {{kind: fake, timeout: 1s}}
    policy: target
    target_per_replica: 10
    min_replicas: 1
    max_replicas: 8
    cooldown_down: 0s
    scale_down_stabilization: 0s
"""


def config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "docktor.yaml"
    path.write_text(CONFIG.format(name=name))
    return path


@pytest.mark.parametrize(("value", "why"), [
    (-50.0, "-50 is negative, which queue.backlog cannot be"),
    (math.nan, "nan is not a finite number"),
    (-math.inf, "-inf is not a finite number"),
])
async def test_a_reading_outside_its_domain_is_missing_and_never_scales_in(tmp_path: Path, value: float, why: str) -> None:
    name = f"impossible{abs(hash(str(value))) % 1000}"
    queue = FakeQueue(name, {"queue.backlog": value, "queue.pending": 4.0})
    fleet = FakeFleet(name, replicas=3, metrics={"cpu.avg": -5.0, "mem.avg_mb": 120.0})
    with registry.installed(FakeSource, FakeExecutor):
        daemon = Supervisor(load_config(config(tmp_path, name)))
        await daemon.open()
        try:
            [rec] = await daemon.run_once()
        finally:
            await daemon.close()
    # today's code read -50 as an empty queue: 3 -> 1 on the first tick
    assert (rec.decision, rec.current_replicas, rec.target_replicas, rec.executed) == ("hold", 3, 3, False)
    assert fleet.scales == []
    assert "queue.backlog" not in rec.observations and rec.observations["queue.pending"] == 4.0
    assert f"source: queue.backlog: {why}: treated as missing" in rec.errors
    # the executor's figures are held to the same domain
    assert "cpu.avg" not in rec.observations and rec.observations["mem.avg_mb"] == 120.0
    assert "executor: cpu.avg: -5 is negative, which cpu.avg cannot be: treated as missing" in rec.errors
    assert queue.reads == 1


def state_file(tmp_path: Path, name: str, **pieces: object) -> Path:
    """A state file as a previous daemon of this config wrote it, with ``pieces`` replaced."""
    path = tmp_path / "state" / "state" / f"{name}.json"
    doc = json.loads(path.read_text())
    doc.update(pieces)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("pieces", "discarded"), [
    ({"saved_at": 1e12}, "the time it was saved: unusable (1000000000000.0 is"),
    ({"pause": {"since": 1.7e9, "until": 1e300, "reason": "x"}}, "the pause: unusable (1e+300 is"),
    ({"last_up_at": 1e12, "failures": -3}, "cooldown clocks and back-off: unusable ("),
    ({"recommendations": [[1e300, 4], ["x", 1]]}, "stabilization recommendations: unusable ("),
    ({"breaker": {"failures": "many"}}, None),  # no llm: nothing to restore it into, and no crash
    ({"identity": "garbage"}, "what it was saved for: unusable ("),
])
async def test_a_state_file_with_numbers_no_clock_can_mean_costs_those_pieces_never_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pieces: dict[str, object], discarded: str | None
) -> None:
    name = "clock" + str(abs(hash(json.dumps(pieces))) % 10000)
    FakeQueue(name, {"queue.backlog": 20.0})
    fleet = FakeFleet(name, replicas=2)
    path = config(tmp_path, name)
    with registry.installed(FakeSource, FakeExecutor):
        first = Supervisor(load_config(path), state="write")
        await first.open()
        try:
            await first.run_once()
        finally:
            await first.close()
        state_file(tmp_path, name, **pieces)
        caplog.set_level(logging.INFO, "docktor")
        again = Supervisor(load_config(path), state="write")
        await again.open()  # today's code: "ValueError: year 33658 is out of range" / OverflowError, at every start
        try:
            [rec] = await again.run_once()
            status = again.status()
        finally:
            await again.close()
    restored = again.loops[name].restored
    assert restored is not None
    if discarded is not None:
        assert any(d.startswith(discarded) for d in restored.discarded), restored.discarded
        assert any(f"{name}: saved state discarded: {discarded}" in m for m in caplog.messages), caplog.messages
    # the daemon decides as usual, and its status (which formats every time it holds) is readable
    assert rec.decision in ("hold", "scale_up", "scale_down") and fleet.running == rec.target_replicas
    json.dumps(status)
    assert status["services"][name]["paused"] is None


AGE_RULE = """
state_dir: state
services:
  - name: {name}
    executor: fake
    queue: {{kind: fake, timeout: 1s, metrics: [queue.backlog, queue.pending, queue.oldest_age]}}
    policy: rules
    min_replicas: 1
    max_replicas: 8
    rules:
      scale_up_when: [{{metric: queue.oldest_age, op: ">", value: 30}}]
      scale_down_when: [{{metric: queue.backlog, op: "<", value: 1}}]
"""


@pytest.mark.parametrize(("name", "published", "decision"), [
    ("waited45", lambda now: now - 45, "scale_up"),  # 45 s ago: the rule fires like on any metric
    ("year33658", lambda now: 1e12, "hold"),  # milliseconds read as seconds: missing with the reason, drives nothing
])
async def test_the_oldest_age_drives_a_rule_and_an_impossible_one_is_missing_with_the_reason(
    tmp_path: Path, name: str, published: Callable[[float], float], decision: str
) -> None:
    path = tmp_path / "docktor.yaml"
    path.write_text(AGE_RULE.format(name=name))
    start = time.time()
    FakeQueue(name, lambda n: {"queue.backlog": 4.0, "queue.pending": 4.0, "queue.oldest_age": age_since(published(start), time.time())})
    fleet = FakeFleet(name, replicas=2)
    with registry.installed(FakeSource, FakeExecutor):
        config = load_config(path)
        exported = DaemonMetrics(config)
        daemon = Supervisor(config)
        await daemon.open()
        try:
            [rec] = await daemon.run_once()
        finally:
            await daemon.close()
    exported.record(rec)
    shown = {s.labels["metric"]: s.value for fam in text_string_to_metric_families(generate_latest(exported.registry).decode())
             for s in fam.samples if s.name == "docktor_observation"}
    assert rec.decision == decision
    if decision == "scale_up":
        assert rec.observations["queue.oldest_age"] == pytest.approx(45.0, abs=1.0)
        assert rec.matched_rules and rec.matched_rules[0].startswith("queue.oldest_age 4") and fleet.scales
        assert shown["queue.oldest_age"] == rec.observations["queue.oldest_age"]  # /metrics: docktor_observation
    else:
        assert "queue.oldest_age" not in rec.observations and "queue.oldest_age" not in shown
        assert "queue.oldest_age" in rec.missing and fleet.scales == []
        (error,) = [e for e in rec.errors if "queue.oldest_age" in e]
        assert error.startswith("source: queue.oldest_age: the oldest message's time (the year 33658) is ")
        assert error.endswith("years ahead of this clock (milliseconds read as seconds?): treated as missing")
