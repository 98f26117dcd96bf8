"""Secrets stay secret: canary credentials in every place one can be set, then every output searched.

Places: a source URL's user-info (refused, and the refusal must not echo it), ``monitor_url``,
``llm.base_url``, environment-named source credentials (``password_env``, ``token_env``), a
``${VAR}`` interpolated into the config, and the LLM key (``llm.api_key_env``). Outputs: every
command's stdout and stderr (``validate``, ``decide --once``, ``daemon start|status|logs|stop``,
``llm check``), and every file the daemon writes in ``state_dir`` (decision log, status file,
daemon log). The NATS server really demands the password and the LLM endpoint really receives
the key, so the secrets are used, not just configured. The LLM endpoint is a scripted
OpenAI-protocol server (named as such) that answers 401 *echoing the Authorization header back*,
as some proxies do: a leak a real llama.cpp cannot produce on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from docktor.agent import redact
from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.foreground import RedactingFilter
from tests.support.cli import docktor_async
from tests.support.peers import free_port, launch_nats
from tests.support.scripted_openai_server import ScriptedOpenAIServer, error

NATS_PASSWORD = "canary-nats-pw-5d81b0"
NATS_TOKEN = "canary-nats-token-a73e29"
LLM_KEY = "sk-canary-llm-key-0c94f6"
URL_PASSWORD = "canary-url-pw-3b27e8"
BASEURL_PASSWORD = "canary-baseurl-pw-e61d04"
INTERPOLATED = "canary-interpolated-77a0c1"
CANARIES = (NATS_PASSWORD, NATS_TOKEN, LLM_KEY, URL_PASSWORD, BASEURL_PASSWORD, INTERPOLATED)
ENV = {"Q_USER": "docktor", "Q_PASS": NATS_PASSWORD, "Q_TOKEN": NATS_TOKEN, "DOCKTOR_CANARY_KEY": LLM_KEY,
       "WORKER_API_TOKEN": INTERPOLATED}


@pytest.fixture(autouse=True)
def fresh_registry() -> Any:
    redact.forget_all()
    yield
    redact.forget_all()


def assert_no_canary(where: str, text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary} leaked into {where}: ...{text[max(0, text.find(canary) - 200):text.find(canary) + 50]}..."


BAD_URLS = """
services:
  - name: a
    executor: local
    command: sleep 60
    policy: rules
    queue: {{kind: nats, url: "nats://alice:{pw}@127.0.0.1:4222", stream: S, consumer: C}}
  - name: b
    executor: local
    command: sleep 60
    policy: rules
    queue: {{kind: nats, stream: S, consumer: C, monitor_url: "http://alice:{pw}@127.0.0.1:8222"}}
  - name: c
    executor: local
    command: sleep 60
    policy: rules
    queue: {{kind: nats, url: "nats+bad://alice:{pw}@127.0.0.1:4222", stream: S, consumer: C}}
  - name: d
    executor: local
    command: sleep 60
    policy: rules
    queue: {{kind: nats, url: "nats://127.0.0.1:4222/?token={pw}&x=1", stream: S, consumer: C}}
"""


async def test_credentials_in_urls_are_never_echoed(tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(BAD_URLS.format(pw=URL_PASSWORD))
    done = await docktor_async("validate", "--config", str(config), env={}, cwd=tmp_path)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 2
    assert "services[0].queue.url" in err and "nats://***@127.0.0.1:4222" in err  # it still says which URL
    assert "services[1].queue.monitor_url" in err and "services[2].queue.url" in err
    assert_no_canary("validate's output", out + err)


LLM_IN_URL = """
llm: {{provider: openai-compatible, base_url: "http://user:{pw}@127.0.0.1:9/v1", model: m}}
services:
  - {{name: a, executor: local, command: sleep 60, policy: rules}}
"""


async def test_an_llm_base_url_with_credentials_is_shown_without_them(tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(LLM_IN_URL.format(pw=BASEURL_PASSWORD))
    done = await docktor_async("validate", "--config", str(config), env={}, cwd=tmp_path)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 0, err
    assert "llm: openai-compatible model m at http://***@127.0.0.1:9/v1" in out
    done = await docktor_async("llm", "check", "--config", str(config), env={}, cwd=tmp_path)
    code, out2, err2 = done.returncode, done.stdout, done.stderr
    assert code == 1 and "endpoint: http://***@127.0.0.1:9/v1" in out2
    assert_no_canary("validate and llm check", out + err + out2 + err2)


CONFIG = """
state_dir: {state}
llm: {{provider: openai-compatible, base_url: "{llm_url}", model: scripted-model, api_key_env: DOCKTOR_CANARY_KEY,
       timeout: 2s, max_tool_rounds: 0}}
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    env: {{WORKER_TOKEN: "${{WORKER_API_TOKEN}}"}}
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 3
    check_interval: 0.5
    policy: target            # wants 2 of 120 queued, and the model's answer has room (2..3): it is asked
    target_per_replica: 60
    queue: {{kind: nats, url: "{nats_url}", stream: JOBS, consumer: WORKERS, user_env: Q_USER, password_env: Q_PASS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 50}}]
  - name: second
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 1
    check_interval: 0.5
    policy: rules
    queue: {{kind: nats, url: "{nats_url2}", stream: JOBS, consumer: WORKERS, token_env: Q_TOKEN, timeout: 1s}}
"""


async def fill(url: str, **auth: str) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url, **auth)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="JOBS", subjects=["jobs.>"]))
    await js.add_consumer("JOBS", ConsumerConfig(durable_name="WORKERS"))
    for _ in range(120):
        await js.publish("jobs.a", b"x")
    await nc.close()


async def test_canary_secrets_reach_no_output_and_no_file(tmp_path: Path) -> None:
    port, mport, port2, mport2 = free_port(), free_port(), free_port(), free_port()
    pw_server = launch_nats(port, mport, tmp_path / "js1", "--user", "docktor", "--pass", NATS_PASSWORD)
    token_server = launch_nats(port2, mport2, tmp_path / "js2", "--auth", NATS_TOKEN)
    outputs: dict[str, str] = {}
    state = tmp_path / "state"
    try:
        await fill(f"nats://127.0.0.1:{port}", user="docktor", password=NATS_PASSWORD)
        await fill(f"nats://127.0.0.1:{port2}", token=NATS_TOKEN)
        echo = error(401, "")

        def echo_key(request: dict[str, Any], headers: dict[str, str]) -> Any:
            return type(echo)(401, {"error": {"message": f"Incorrect API key provided: {headers.get('authorization')}",
                                              "type": "invalid_request_error", "code": 401}})

        async with ScriptedOpenAIServer([echo_key]) as llm:
            config = tmp_path / "docktor.yaml"
            config.write_text(CONFIG.format(state=state, llm_url=llm.base_url, python=sys.executable,
                                            nats_url=f"nats://127.0.0.1:{port}", nats_url2=f"nats://127.0.0.1:{port2}"))
            c = ["--config", str(config)]
            for name, args in [("validate", ["validate", *c]), ("decide", ["decide", "--once", "--dry-run", "--json", *c]),
                               ("decide table", ["decide", "--once", "--dry-run", *c]), ("start", ["daemon", "start", *c])]:
                done = await docktor_async(*args, env=ENV, cwd=tmp_path)
                code, out, err = done.returncode, done.stdout, done.stderr
                outputs[name] = out + err
                assert code == 0, (name, out, err)
            decided = [json.loads(line) for line in outputs["decide"].splitlines() if line.startswith("{")]
            # decide --once: the deterministic decision, then the LLM's answer at the tick it lands in
            asked, worker = [r for r in decided if r["service"] == "worker"]
            assert asked["llm"]["asked"] is True and "in_flight" in asked["llm"]
            # the password and the token really worked: both queues were read
            assert worker["observations"]["queue.backlog"] == 120
            assert next(r for r in decided if r["service"] == "second")["observations"]["queue.backlog"] == 120
            # the key really went out, and the endpoint really sent it back in its error
            assert llm.headers and llm.headers[0]["authorization"] == f"Bearer {LLM_KEY}"
            assert worker["source"] == "fallback" and "Incorrect API key provided: Bearer ***" in worker["llm"]["error"]

            deadline = asyncio.get_running_loop().time() + 60
            while True:
                done = await docktor_async("daemon", "logs", "--json", *c, env=ENV, cwd=tmp_path)
                code, out, err = done.returncode, done.stdout, done.stderr
                if sum(1 for line in out.splitlines() if '"service":"worker"' in line) >= 3:
                    break
                assert asyncio.get_running_loop().time() < deadline, err
                await asyncio.sleep(0.3)
            for name, args in [("status", ["daemon", "status", *c]), ("status json", ["daemon", "status", "--json", *c]),
                               ("logs", ["daemon", "logs", "--json", *c]), ("logs table", ["daemon", "logs", *c]),
                               ("stop", ["daemon", "stop", *c])]:
                done = await docktor_async(*args, env=ENV, cwd=tmp_path)
                code, out, err = done.returncode, done.stdout, done.stderr
                outputs[name] = out + err
                assert code == 0, (name, out, err)
    finally:
        for server in (pw_server, token_server):
            server.terminate()
            server.wait(10)
    for name, text in outputs.items():
        assert_no_canary(f"the output of {name}", text)
    files = [p for p in state.rglob("*") if p.is_file() and p.name != "docktor.lock"]
    assert {"decisions.jsonl", "daemon.log"} <= {p.name for p in files}
    for p in files:
        assert_no_canary(str(p.relative_to(tmp_path)), p.read_text(errors="replace"))


def test_a_registered_secret_is_scrubbed_from_records_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """The sinks themselves: a decision record (its line and its in-memory copy) and a log line."""
    redact.register(LLM_KEY)
    rec = DecisionRecord(ts="2026-01-01T00:00:00.000Z", service="w", mode="autonomous", current_replicas=1, decision="hold",
                         target_replicas=1, reason=f"saw {LLM_KEY}", source="rules", errors=[f"source: nats://u:{URL_PASSWORD}@h"],
                         llm={"error": f"HTTP 401: {json.dumps(LLM_KEY)}"})
    assert_no_canary("a record", rec.line().decode() + repr(rec.model_dump()))
    copied = rec.model_copy(update={"reason": f"later {LLM_KEY}"})  # model_copy skips validation: line() still scrubs
    assert_no_canary("a copied record's line", copied.line().decode())
    logger = logging.getLogger("docktor.test-secrets")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="docktor.test-secrets"):
            logger.info("connecting to %s with %s", f"nats://u:{URL_PASSWORD}@h:1", LLM_KEY)
    finally:
        logger.removeHandler(handler)
    assert caplog.records and all(canary not in handler.format(r) for r in caplog.records for canary in CANARIES)
