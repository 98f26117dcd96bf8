"""docktor.yaml loading: every problem names its path; nothing but UsageError escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docktor.agent.config.load import load_config, parse_config
from docktor.agent.problems import UsageError

VALID = """
mode: advisory
services:
  - name: worker
    executor: local
    command: python -c "import time; time.sleep(60)"
    min_replicas: 1
    max_replicas: 5
    check_interval: 5s
    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}
    rules:
      scale_up_when:
        - {metric: queue.backlog, op: ">", value: 500}
        - {metric: queue.rate_in, op: ">", value: 200}
      scale_down_when:
        - {metric: queue.backlog, op: "<=", value: 100}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(UsageError) as e:
        parse_config(text, Path("/tmp/x/docktor.yaml"), env or {})
    return [str(p) for p in e.value.problems]


def test_valid_config_loads_with_defaults_resolved() -> None:
    cfg = parse_config(VALID, Path("/srv/app/docktor.yaml"), {})
    svc = cfg.services[0]
    assert cfg.mode == "advisory"
    assert cfg.state_dir == Path("/srv/app/.docktor")
    assert svc.executor is not None and svc.executor.kind == "local"
    assert svc.executor.settings.command == ["python", "-c", "import time; time.sleep(60)"]
    assert svc.check_interval == 5.0
    (source,) = svc.sources
    assert (source.name, source.kind, source.primary, source.settings.stream) == ("nats", "nats", True, "JOBS")
    assert [r.text() for r in svc.rules.scale_up_when] == ["queue.backlog > 500", "queue.rate_in > 200"]


def test_unknown_key_is_an_error_with_a_did_you_mean_hint() -> None:
    bad = VALID.replace("min_replicas: 1", "min_replica: 1")
    assert problems(bad) == ["services[0].min_replica: unknown key (did you mean 'min_replicas'?)"]


def test_unknown_key_inside_a_rule_names_the_full_path() -> None:
    bad = VALID.replace('{metric: queue.rate_in, op: ">", value: 200}', '{metric: queue.rate_in, opp: ">", value: 200}')
    found = problems(bad)
    assert "services[0].rules.scale_up_when[1].opp: unknown key (did you mean 'op'?)" in found
    assert "services[0].rules.scale_up_when[1].op: required" in found


def test_bad_operator_names_the_path() -> None:
    bad = VALID.replace('{metric: queue.rate_in, op: ">", value: 200}', '{metric: queue.rate_in, op: "=>", value: 200}')
    (line,) = problems(bad)
    assert line.startswith("services[0].rules.scale_up_when[1].op: must be ")
    assert "'=>'" in line


def test_min_greater_than_max() -> None:
    assert problems(VALID.replace("min_replicas: 1", "min_replicas: 7")) == [
        "services[0].min_replicas: min_replicas (7) is greater than max_replicas (5)"
    ]


def test_negative_interval_and_wrong_type() -> None:
    found = problems(VALID.replace("check_interval: 5s", "check_interval: -5").replace("max_replicas: 5", "max_replicas: ten"))
    assert any(p.startswith("services[0].check_interval:") for p in found)
    assert any(p.startswith("services[0].max_replicas:") and "'ten'" in p for p in found)


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("    scale_up_percent: .inf", "services[0].scale_up_percent"),
        ("    scale_up_percent: 1e308", "services[0].scale_up_percent"),
        ("    cooldown_up: .inf", "services[0].cooldown_up"),
        ("    startup_delay: .nan", "services[0].startup_delay"),
        ("    target_wait: -.inf", "services[0].target_wait"),
        ('    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS, timeout: .inf}',
         "services[0].queue.timeout"),
    ],
)
def test_infinities_and_nans_are_refused_where_they_are_written(setting: str, field: str) -> None:
    # `.inf` is a YAML float: a step of .inf percent used to pass and then crash every decision
    # (math.ceil of infinity); 1e308 percent overflowed to infinity the same way
    # (the queue line is replaced only by a queue line: without a queue, the rules' metrics are a second problem)
    queue = '    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}\n'
    base = VALID.replace(queue, "") if setting.lstrip().startswith("queue:") else VALID
    found = problems(base + setting + "\n")
    assert len(found) == 1 and found[0].startswith(field + ": "), found


def test_duplicate_service_names() -> None:
    doubled = VALID + VALID.split("services:\n", 1)[1]
    assert "services[1].name: duplicate service name 'worker' (also services[0])" in problems(doubled)


def test_unknown_metric_in_rule_suggests_the_known_one() -> None:
    bad = VALID.replace("metric: queue.rate_in", "metric: queue.ratein")
    (line,) = problems(bad)
    assert line.startswith(
        "services[0].rules.scale_up_when[1].metric: unknown metric 'queue.ratein' (did you mean 'queue.rate_in'?): "
        "not provided by this service's sources or executor (available: queue.ack_pending, queue.backlog, "
    )


def test_local_executor_needs_a_command() -> None:
    bad = VALID.replace('    command: python -c "import time; time.sleep(60)"\n', "")
    assert problems(bad) == ["services[0].command: required by the local executor"]


def test_unknown_queue_kind_and_queue_settings_errors() -> None:
    (line,) = problems(VALID.replace("kind: nats", "kind: natz"))
    assert line.startswith("services[0].queue.kind: unknown source kind 'natz' (did you mean 'nats'?) (installed: ")
    assert "nats" in line.split("installed: ")[1]
    found = problems(VALID.replace("stream: JOBS, ", ""))
    assert found == ["services[0].queue.stream: required"]


def test_interpolation_with_defaults_and_escapes() -> None:
    text = VALID.replace("stream: JOBS", "stream: '${STREAM}'").replace("max_replicas: 5", "max_replicas: ${MAX:-8}")
    text = text.replace("mode: advisory", "mode: advisory\nstate_dir: /tmp/$$HOME")
    cfg = parse_config(text, Path("/tmp/docktor.yaml"), {"STREAM": "ORDERS"})
    assert cfg.services[0].sources[0].settings.stream == "ORDERS"
    assert cfg.services[0].max_replicas == 8
    assert cfg.state_dir == Path("/tmp/$HOME")


def test_missing_environment_variable_names_the_field() -> None:
    assert problems(VALID.replace("stream: JOBS", "stream: '${STREAM}'")) == [
        "services[0].queue.stream: environment variable STREAM is not set"
    ]


def test_not_yaml_missing_file_and_wrong_top_level(tmp_path: Path) -> None:
    (line,) = problems("services: [\n  - name: a\n    min: {")
    assert "not valid YAML at line" in line
    assert problems("- just\n- a list\n") == ["/tmp/x/docktor.yaml: must be a YAML mapping with a 'services' list"]
    assert problems("mode: advisory\n") == ["services: required"]
    with pytest.raises(UsageError) as e:
        load_config(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_compose_executor_inferred_from_a_top_level_compose_file() -> None:
    text = "compose_file: stack.yaml\nservices:\n  - name: consumer\n    policy: rules\n"
    cfg = parse_config(text, Path("/srv/docktor.yaml"), {})
    executor = cfg.services[0].executor
    assert executor is not None and executor.kind == "compose"
    assert executor.settings.compose_file == Path("stack.yaml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_config_or_a_usage_error(text: str) -> None:
    try:
        parse_config(text, Path("/tmp/docktor.yaml"), {})
    except UsageError as e:
        assert e.problems and all(str(p) for p in e.problems)


def test_go_format_jetstream_false_is_an_error_not_a_warning() -> None:
    assert problems(VALID.replace("kind: nats,", "kind: nats, jetstream: false,")) == [
        "services[0].queue.jetstream: must be true (got False): this source reads NATS through JetStream only"
    ]
    cfg = parse_config(VALID.replace("kind: nats,", "kind: nats, jetstream: true,"), Path("/tmp/d.yaml"), {})
    assert cfg.warnings == ("services[0].queue.jetstream: deprecated, this source always reads NATS through JetStream",)
