"""Configs of the daemon with an LLM advisor beside it (tests/runtime/test_llm_daemon.py and the
advisor tests): local-executor services on a JetStream backlog, sized by the target policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["SLEEPER", "config_yaml", "service_yaml"]

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def service_yaml(name: str, nats_url: str, *, interval: float, min_r: int = 1, max_r: int = 4) -> str:
    """One service on JOBS/WORKERS: the target policy (40 per replica) once the backlog passes 50.
    A sizing policy, because its answer has room above the deterministic count (the allowance);
    under the rules policy a scale-up is its step limit and no model is asked."""
    return f"""
  - name: {name}
    executor: local
    command: {json.dumps(SLEEPER)}
    stop_grace_period: 1s
    min_replicas: {min_r}
    max_replicas: {max_r}
    scale_up_by: 4
    check_interval: {interval}
    policy: target
    target_per_replica: 40
    cooldown_up: 0
    cooldown_down: 0
    scale_down_stabilization: 0
    queue: {{kind: nats, url: "{nats_url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 50}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 5}}]
"""


def config_yaml(tmp_path: Path, llm: dict[str, Any], services: str) -> str:
    """The whole config: state in ``tmp_path``, autonomous, the ``llm`` block, ``services``."""
    # the llm block as a JSON flow mapping: YAML reads it as is
    return f"state_dir: {tmp_path}\nmode: autonomous\nllm: {json.dumps(llm)}\nservices:{services}"
