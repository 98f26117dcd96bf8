"""Configs written for the Go Docktor load unchanged: its single-service and multi-service formats.

The files here are written in the Go Docktor's formats (as its README and loader define them:
``service``/``scaling`` with cpu_high/cpu_low, or ``services`` with rules and a NATS ``queue``).
"""

from __future__ import annotations

import asyncio
import re
import textwrap
import time
from pathlib import Path

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.problems import UsageError
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.peers import compose, down, need_docker, unique_project

SINGLE = """\
version: "1"
service: web
compose_file: stack/docker-compose.yaml
scaling:
  cpu_high: 70.0
  cpu_low: 10.0
  min_replicas: 2
  max_replicas: 7
  scale_up_by: 2
  scale_down_by: 1
  check_interval: 5
  metrics_window: 5
llm:
  provider: dmr
  base_url: "http://localhost:12434/engines/llama.cpp/v1"
  model: "ai/llama3.2"
"""

MULTI = """\
version: "1"
compose_file: docker-compose.yaml
llm:
  provider: dmr
  base_url: "http://localhost:12434/engines/llama.cpp/v1"
  model: "ai/llama3.2"
services:
  - name: consumer
    min_replicas: 1
    max_replicas: 10
    metrics_window: 10
    check_interval: 10
    rules:
      scale_up_when:
        - {metric: queue.backlog, op: ">", value: 500}
        - {metric: cpu.avg_pct, op: ">", value: 85}
      scale_down_when:
        - {metric: queue.backlog, op: "<=", value: 100}
    queue:
      kind: nats
      url: nats://nats:4222
      jetstream: true
      stream: EVENTS
      consumer: WEB_WORKERS
      subject: events.web
      metrics: [backlog, lag, rate_in, rate_out]
"""


def test_single_service_format_becomes_one_service_with_the_go_rules() -> None:
    cfg = parse_config(SINGLE, Path("/srv/app/docktor.yaml"), {})
    (svc,) = cfg.services
    assert svc.name == "web" and svc.policy == "rules"
    assert (svc.min_replicas, svc.max_replicas, svc.scale_up_by, svc.scale_down_by, svc.check_interval) == (2, 7, 2, 1, 5.0)
    assert [r.text() for r in svc.rules.scale_up_when] == ["cpu.avg > 70"]
    assert [r.text() for r in svc.rules.scale_down_when] == ["cpu.avg < 10"]
    assert svc.executor is not None and svc.executor.kind == "compose"
    assert svc.executor.settings.compose_file == Path("stack/docker-compose.yaml")
    assert cfg.llm.provider == "dmr" and cfg.llm.model == "ai/llama3.2"
    assert "scaling.metrics_window: deprecated, rates come from consecutive ticks; metrics_window is ignored" in cfg.warnings
    assert any(w.startswith("service/scaling: the Go Docktor's single-service format") for w in cfg.warnings)


def test_single_service_keys_left_out_take_the_go_defaults() -> None:
    cfg = parse_config("compose_file: c.yaml\nscaling:\n  max_replicas: 4\n", Path("/srv/docktor.yaml"), {})
    (svc,) = cfg.services
    assert svc.name == "web"  # the Go Docktor's default service
    assert (svc.min_replicas, svc.max_replicas, svc.check_interval) == (2, 4, 10.0)
    assert [r.text() for r in svc.rules.scale_up_when + svc.rules.scale_down_when] == ["cpu.avg > 75", "cpu.avg < 20"]


def test_multi_service_format_loads_with_a_warning_per_deprecated_key() -> None:
    cfg = parse_config(MULTI, Path("/srv/nats-queue/docktor.yaml"), {})
    (svc,) = cfg.services
    assert svc.executor is not None and svc.executor.kind == "compose"
    assert [r.text() for r in svc.rules.scale_up_when] == ["queue.backlog > 500", "cpu.avg > 85"]
    assert svc.sources[0].settings.stream == "EVENTS"
    assert set(cfg.warnings) == {
        "services[0].metrics_window: deprecated, rates come from consecutive ticks; metrics_window is ignored",
        "services[0].rules.scale_up_when[1].metric: 'cpu.avg_pct' is deprecated, read as 'cpu.avg'",
        "services[0].queue.jetstream: deprecated, this source always reads NATS through JetStream",
        "services[0].queue.metrics: deprecated, all queue.* metrics are always produced",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service: web\nservices:\n  - name: a\n", "service: give either services: (a list) or the single-service form"),
        ("service: web\nscaling: 3\n", "scaling: must be a mapping"),
        ("service: web\ncompose_file: c.yaml\nscaling:\n  cpu_hi: 80\n", "scaling.cpu_hi: unknown key"),
    ],
)
def test_broken_single_service_configs_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_config(text, Path("/srv/docktor.yaml"), {})
    assert any(str(p).startswith(expected) for p in e.value.problems), e.value.problems


@pytest.mark.docker
async def test_single_service_config_decides_on_cpu_percent_from_the_compose_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_docker()
    stack = tmp_path / "stack"
    stack.mkdir()
    compose_file = stack / "docker-compose.yaml"
    # one replica that burns a core: its CPU percent is far above cpu_high
    compose_file.write_text(textwrap.dedent("""
        services:
          web:
            image: python:3.12-slim
            command: ["python", "-c", "while True: pass"]
            stop_grace_period: 1s
    """))
    project = unique_project()
    # a threshold the burner exceeds even on a loaded machine (it gets most of a core, not all)
    text = SINGLE.replace("min_replicas: 2", "min_replicas: 1").replace("cpu_high: 70.0", "cpu_high: 25.0")
    text += f"state_dir: {tmp_path / 'state'}\n"
    config = parse_config(text, tmp_path / "docktor.yaml", {"COMPOSE_PROJECT_NAME": project})
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", project)  # the executor derives the project as Compose would
    daemon = Supervisor(config)
    try:
        compose(project, compose_file, "up", "-d")
        await daemon.open()
        # CPU percent needs two engine readings of the container: tick until the daemon has it
        deadline = time.monotonic() + 60
        while True:
            record = (await daemon.run_once(dry_run=True))[0]  # then, with an llm: block, what its answer did
            if "cpu.avg" in record.observations or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        cpu = record.observations["cpu.avg"]
        assert cpu > 25, record.observations
        # the rule shows the reading to 4 significant digits, the record keeps it to 4 decimals:
        # the same number rounded twice (58.99501 is "59" in the rule, 58.995 in the record)
        (matched,) = record.matched_rules
        shown = re.fullmatch(r"cpu\.avg ([0-9.]+) > 25", matched)
        assert shown is not None, matched
        assert float(shown.group(1)) == pytest.approx(cpu, rel=1e-3)
        assert (record.decision, record.current_replicas, record.target_replicas, record.executed) == ("scale_up", 1, 3, False)
    finally:
        await daemon.close()
        down(project, compose_file)
