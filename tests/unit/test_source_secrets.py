"""A secret typed where a setting names one never reaches the error `docktor validate` prints."""

from __future__ import annotations

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.problems import UsageError

CANARY = "canary-secret-7e4a"

SERVICE = """
services:
  - name: w
    executor: local
    command: [python, worker.py]
    policy: rules
    queue: {queue}
"""


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        (f'{{kind: nats, url: "nats://u:{CANARY}@h:4222", stream: S, consumer: C}}', "url: no credentials in the URL"),
        (f'{{kind: nats, stream: S, consumer: C, monitor_url: "http://u:{CANARY}@h:8222"}}', "monitor_url: no credentials"),
        (f'{{kind: rabbitmq, url: "http://u:{CANARY}@h:15672", queue: q}}', "url: no credentials in the URL"),
        (f'{{kind: rabbitmq, url: "amqp://u:{CANARY}@h:5672", queue: q}}', "url: no credentials in the URL"),
        (f'{{kind: redis, url: "redis://:{CANARY}@h:6379/0", list: jobs}}', "url: no credentials in the URL"),
        (f'{{kind: prometheus, url: "https://u:{CANARY}@h", queries: {{queue.backlog: x}}}}', "url: no credentials in the URL"),
        (f'{{kind: rabbitmq, queue: q, username_env: U, password_env: "{CANARY}!"}}', "password_env: must be the name of"),
        (f'{{kind: redis, list: jobs, password_env: "{CANARY} x"}}', "password_env: must be the name of"),
        (f'{{kind: prometheus, queries: {{queue.backlog: x}}, bearer_token_env: "Bearer {CANARY}"}}', "bearer_token_env: must be"),
    ],
)
def test_a_secret_in_the_wrong_place_is_refused_without_echoing_it(queue: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_config(SERVICE.format(queue=queue))
    text = str(info.value)
    assert f"services[0].queue.{message}" in text  # the error names the setting's full path
    assert CANARY not in text
