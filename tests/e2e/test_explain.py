"""``docktor explain``: decisions made by the real decision core, written by the real log, read back in prose."""

from __future__ import annotations

import time
from pathlib import Path

from docktor.agent.config.load import parse_config
from docktor.agent.core.decide import decide, remember
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, Outcome, OutcomeRecord
from docktor.agent.timestamps import rfc3339
from tests.support.cli import docktor

CONFIG = """
services:
  - name: worker
    executor: local
    command: ["python", "worker.py"]
    policy: rules
    min_replicas: 1
    max_replicas: 4
    cooldown_down: 30
    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}
    rules:
      scale_up_when: [{metric: queue.backlog, op: ">", value: 500}]
      scale_down_when: [{metric: queue.backlog, op: "<=", value: 100}]
"""


def test_explain_tells_each_decision_as_prose(tmp_path: Path) -> None:
    cfg_path = tmp_path / "docktor.yaml"
    cfg_path.write_text(CONFIG)
    svc = parse_config(CONFIG, cfg_path, {}).services[0]
    state, log, now = ServiceState(), DecisionLog(tmp_path / ".docktor" / "decisions.jsonl"), time.time()
    # a burst: scale up 2 -> 4 (step limit), executed and verified
    up = decide(svc, {"queue.backlog": 1800.0, "queue.rate_in": 300.0}, 2, state, 100.0)
    remember(state, up, 100.0, acted=True)
    intent = DecisionRecord.from_decision(up, mode="autonomous", ts=now - 20, id="a1")
    log.write(intent.model_copy(update={"phase": "intent"}))
    log.write(OutcomeRecord(ts=rfc3339(now - 19), service="worker", id="a1", phase="outcome", executed=True,
                            outcome=Outcome(status="ok", message="4 running after 900 ms", duration_ms=912.0)))
    # drained, but 10 s after the scale-up: cooldown_down holds
    held = decide(svc, {"queue.backlog": 20.0, "queue.rate_in": 30.0}, 4, state, 110.0)
    log.write(DecisionRecord.from_decision(held, mode="autonomous", ts=now - 10, errors=["source: one read timed out"]))
    log.close()

    done = docktor("explain", "-c", str(cfg_path), "-n", "2")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split("\n\n")
    assert first.splitlines()[0].endswith("worker  scale_up 2 -> 4")
    assert "  observed   queue.backlog 1800, queue.rate_in 300/s, replicas.running 2" in first
    assert "  rules      matched: queue.backlog 1800 > 500" in first
    assert "  proposed   4 by the rules: queue.backlog 1800 > 500" in first
    assert "  guardrails none changed the proposal" in first
    assert "  outcome    ok in 0.9 s: 4 running after 900 ms" in first
    assert second.splitlines()[0].endswith("worker  hold 4 -> 4")
    assert "  proposed   3 by the rules: queue.backlog 20 <= 100; held at 4 by cooldown_down (20 s left; asked 3)" in second
    assert "  guardrails cooldown_down turned 3 into 4, 20 s left" in second
    assert "  outcome    nothing to do" in second
    assert "  error      source: one read timed out" in second

    only_changes = docktor("explain", "-c", str(cfg_path), "--changes")
    assert "scale_up 2 -> 4" in only_changes.stdout and "hold 4 -> 4" not in only_changes.stdout
    unknown = docktor("explain", "-c", str(cfg_path), "--service", "nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: --service: no service named 'nope'")
