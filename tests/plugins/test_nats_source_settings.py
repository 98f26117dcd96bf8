"""The NATS JetStream source's settings (defaults, server lists, bad input, credentials kept out of
errors) and the Go Docktor's config format it still loads; no server needed.

The source against a real nats-server: test_nats_source_figures.py and test_nats_source_faults.py."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from docktor.agent.config.compat import DEPRECATED_SOURCE_KEYS
from docktor.agent.config.load import parse_config
from docktor.tools.sources.nats import NatsSettings as Settings
from tests.support.nats_source_setup import CONSUMER, STREAM, settings

#: the Go Docktor's queue keys that load with a warning (migration lives in config/compat)
DEPRECATED_KEYS = DEPRECATED_SOURCE_KEYS["nats"]


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_duration_strings() -> None:
    s = Settings.model_validate({"kind": "nats", "stream": "S", "consumer": "C", "timeout": "1500ms"})
    assert s.url == "nats://127.0.0.1:4222"
    assert s.timeout == 1.5
    assert s.monitor_url is None and s.subject is None
    assert Settings.model_validate({"kind": "nats", "stream": "S", "consumer": "C"}).timeout == 2.0


def test_settings_accepts_a_server_list() -> None:
    s = settings("nats://10.0.0.1:4222, nats://10.0.0.2:4222,tls://10.0.0.3:4443")
    assert s.servers == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "tls://10.0.0.3:4443"]


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"lagThreshold": 5}, "lagThreshold", "Extra inputs"),
        ({"stream": "ORD.ERS"}, "stream", "not a JetStream name"),
        ({"consumer": "a b"}, "consumer", "not a JetStream name"),
        ({"url": "nats://bob:secret@host:4222"}, "url", "no credentials in the URL"),
        ({"url": "http://host:4222"}, "url", "scheme"),
        ({"monitor_url": "host:8222"}, "monitor_url", "http(s)"),
        ({"user_env": "NATS_USER"}, None, "go together"),
        ({"token_env": "TOK", "creds_file": "x.creds"}, None, "one of"),
        ({"password_env": "not a name", "user_env": "U"}, "password_env", "must be the name of an environment variable"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"timeout": "soon"}, "timeout", "not a duration"),
    ],
)
def test_settings_reject_bad_input(extra: dict[str, Any], field: str | None, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"kind": "nats", "stream": STREAM, "consumer": CONSUMER, **extra})
    errors = info.value.errors()
    assert any(fragment in e["msg"] for e in errors), errors
    if field is not None:
        assert any(e["loc"] and e["loc"][0] == field for e in errors), errors


def test_credentials_never_appear_in_the_url_error() -> None:
    with pytest.raises(ValidationError) as info:
        settings("nats://bob:hunter2@host:4222")
    assert "hunter2" not in str(info.value.errors()[0]["msg"])


GO_QUEUE = {
    "kind": "nats",
    "url": "nats://nats:4222",
    "jetstream": True,
    "stream": "JOBS",
    "consumer": "JOB_WORKERS",
    "subject": "jobs.render",
    "metrics": ["backlog", "lag", "rate_in", "rate_out"],
}


def test_go_format_keys_are_the_deprecated_ones() -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(GO_QUEUE)
    assert {e["loc"][0] for e in info.value.errors()} == set(DEPRECATED_KEYS)
    s = Settings.model_validate({k: v for k, v in GO_QUEUE.items() if k not in DEPRECATED_KEYS})
    assert (s.stream, s.consumer, s.subject, s.url) == ("JOBS", "JOB_WORKERS", "jobs.render", "nats://nats:4222")


GO_SERVICE = """
  - name: renderer
    min_replicas: 1
    max_replicas: 6
    metrics_window: 15
    check_interval: 5
    rules:
      scale_up_when:
        - metric: queue.backlog
          op: ">"
          value: 300
        - metric: queue.rate_in
          op: ">"
          value: 80
      scale_down_when:
        - metric: queue.backlog
          op: "<="
          value: 20
        - metric: queue.rate_out
          op: ">="
          value: 1
    queue:
      kind: nats
      url: nats://nats:4222
      jetstream: true
      stream: JOBS
      consumer: JOB_WORKERS
      subject: jobs.render
      metrics:
        - backlog
        - lag
        - rate_in
        - rate_out
"""


def _check_go_config(text: str) -> None:
    config = parse_config(text)
    assert sorted(config.warnings) == [
        "services[0].metrics_window: deprecated, rates come from consecutive ticks; metrics_window is ignored",
        f"services[0].queue.jetstream: deprecated, {DEPRECATED_KEYS['jetstream']}",
        f"services[0].queue.metrics: deprecated, {DEPRECATED_KEYS['metrics']}",
    ]
    svc = config.services[0]
    q = svc.sources[0].settings
    assert isinstance(q, Settings)
    assert (q.url, q.stream, q.consumer, q.subject) == ("nats://nats:4222", "JOBS", "JOB_WORKERS", "jobs.render")
    assert (svc.min_replicas, svc.max_replicas, svc.check_interval) == (1, 6, 5.0)
    assert [r.text() for r in svc.rules.scale_up_when] == ["queue.backlog > 300", "queue.rate_in > 80"]


def test_parse_config_loads_go_docktor_format() -> None:
    pytest.importorskip("docktor.tools.executors.compose")
    text = (
        'version: "1"\ncompose_file: docker-compose.yaml\n'
        "llm:\n  provider: dmr\n  base_url: http://localhost:12434/engines/llama.cpp/v1\n  model: ai/llama3.2\n"
        "services:" + GO_SERVICE
    )
    _check_go_config(text)
    assert parse_config(text).llm.provider == "dmr"


def test_parse_config_loads_go_queue_block_with_local_executor() -> None:
    # The same Go queue block under the local executor, which needs no compose plugin.
    text = "services:" + GO_SERVICE + "    executor: local\n    command: python worker.py\n"
    _check_go_config(text)
