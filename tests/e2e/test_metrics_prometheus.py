"""A real Prometheus scrapes a real daemon, and every query of the Grafana dashboard returns data.

``docktor daemon start --foreground`` runs three services on the local executor against a real
nats-server: ``orders`` (rules policy) and ``emails`` (docktor policy), whose replicas are real
JetStream workers (``docktor.agent.demo.worker``) under a steady load plus a burst, and ``broken``,
whose NATS URL points at a closed port (a real refused connection: source errors, missing data).
The LLM is the llama.cpp peer when it is available, else an endpoint on a closed port (every call
a real connection failure, so latency, outcomes and the breaker still move). Debian's
``prometheus`` scrapes ``/metrics`` every second; the PromQL of every panel of
``examples/grafana/dashboards/docktor.json`` (parsed out of the file, Grafana's variables filled in)
is then asked of Prometheus's HTTP API and must answer with a finite number.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.examples import daemon
from tests.support.peers import REPO, NatsServer, free_port, llm_available, start_llama
from tests.support.servers import PrometheusServer, need_binary
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(420)

GRAFANA = REPO / "examples" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "docktor.json"
#: what Grafana puts in place of its variables; the windows cover the whole run
VARIABLES = {"$__rate_interval": "5m", "$__range": "10m", "$service": ".+"}
SERVICES = ("orders", "emails", "broken")


def dashboard_script() -> Any:
    spec = importlib.util.spec_from_file_location("docktor_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboard_is_the_scripts_output() -> None:
    assert DASHBOARD.read_text() == dashboard_script().render(), "run: python examples/grafana/dashboard.py"


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included."""
    out = []
    for panel in board["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
    return out


def fill(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable the test does not fill: {expr}"
    return expr


def test_every_panel_has_a_query_and_the_provisioning_points_at_the_dashboard() -> None:
    import yaml

    board = json.loads(DASHBOARD.read_text())
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert graphs and all(p.get("targets") for p in graphs)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    titles = " ".join(p["title"] for p in graphs).lower()
    for topic in ("replicas vs load", "backlog", "wait", "decisions", "guardrail", "llm call latency", "fallback", "decision log"):
        assert topic in titles, topic
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "docktor.yaml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasources[0]["type"] == "prometheus"


# --------------------------------------------------------------------------- the live run


class Load:
    """A steady trickle into both streams from a thread (so the workers always complete something)."""

    def __init__(self, url: str, per_second: float = 20.0):
        self.url, self.per_second = url, per_second
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import nats

        nc = await nats.connect(self.url)
        js = nc.jetstream()
        try:
            while not self.stop.is_set():
                for subject in ("orders.new", "emails.new"):
                    await js.publish(subject, b"x")
                await asyncio.sleep(1 / self.per_second)
        finally:
            await nc.close()

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


async def setup_streams(url: str, burst: int, create: bool = True) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in ("ORDERS", "EMAILS"):
            if create:
                await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
                await js.add_consumer(stream, ConsumerConfig(durable_name="WORKERS"))
            for start in range(0, burst, 200):
                await asyncio.gather(*(js.publish(f"{stream.lower()}.new", b"x") for _ in range(start, min(burst, start + 200))))
    finally:
        await nc.close()


def worker(url: str, stream: str) -> str:
    return json.dumps([sys.executable, "-m", "docktor.agent.demo.worker", "--url", url, "--stream", stream, "--consumer", "WORKERS"])


def config_text(tmp: Path, nats_url: str, metrics_port: int, llm: dict[str, Any]) -> str:
    dead = f"nats://127.0.0.1:{free_port()}"
    return f"""
state_dir: {tmp / 'state'}
metrics: {{listen: 127.0.0.1:{metrics_port}}}
llm: {json.dumps(llm)}
services:
  - name: orders
    executor: local
    command: {worker(nats_url, "ORDERS")}
    stop_grace_period: 2s
    min_replicas: 1
    max_replicas: 5
    check_interval: 1s
    policy: rules
    scale_up_by: 1
    cooldown_up: 0
    cooldown_down: 2s
    scale_down_stabilization: 3s
    queue: {{kind: nats, url: "{nats_url}", stream: ORDERS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog_per_replica, op: ">", value: 30}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 10}}]
  - name: emails
    executor: local
    command: {worker(nats_url, "EMAILS")}
    stop_grace_period: 2s
    min_replicas: 1
    max_replicas: 4
    check_interval: 1s
    policy: docktor
    target_wait: 2s
    processing_time: 16ms
    queue: {{kind: nats, url: "{nats_url}", stream: EMAILS, consumer: WORKERS, timeout: 1s}}
  - name: broken
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 3
    check_interval: 1s
    policy: rules
    queue: {{kind: nats, url: "{dead}", stream: NONE, consumer: NONE, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 100}}]
"""


@pytest.fixture
def llm_endpoint() -> Iterator[tuple[dict[str, Any], bool]]:
    """(the llm: block, whether a model answers)."""
    ok, _ = llm_available()
    if not ok:
        # nothing listens there: each call fails at once with a real refused connection
        yield {"provider": "openai-compatible", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "none",
               "timeout": "5s", "heartbeat": "2s"}, False
        return
    server, base_url = start_llama("")
    try:
        yield {"provider": "openai-compatible", "base_url": base_url, "model": "ai/llama3.2", "timeout": "60s",
               "max_tokens": 200, "max_tool_rounds": 0, "heartbeat": "5s"}, True
    finally:
        del server


def query(prom: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    url = f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return result if isinstance(result, list) else [{"value": result}]


def total(prom: PrometheusServer, expr: str) -> float:
    result = query(prom, f"sum({expr})")
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_scrapes_the_daemon_and_every_dashboard_query_returns_data(
    tmp_path: Path, nats_server: NatsServer, llm_endpoint: tuple[dict[str, Any], bool]
) -> None:
    need_binary("prometheus")
    llm, answers = llm_endpoint
    asyncio.run(setup_streams(nats_server.url, burst=0))
    port = free_port()
    config = tmp_path / "docktor.yaml"
    config.write_text(config_text(tmp_path, nats_server.url, port, llm))
    prom = PrometheusServer.start(tmp_path / "prometheus", [f"127.0.0.1:{port}"], scrape_interval="1s")
    try:
        with daemon(config, {}) as read:
            def seen(expr: str, at_least: float = 1) -> bool:
                read()  # raises if the daemon died
                return total(prom, expr) >= at_least

            # Events count in rate() and increase() only once Prometheus has samples from before them.
            wait_until("Prometheus scrapes the daemon", lambda: seen('count_over_time(up{job="test"}[5m]) and up{job="test"} == 1', 3), 90, every=0.5)
            asyncio.run(setup_streams(nats_server.url, burst=400, create=False))
            with Load(nats_server.url):
                wait_until("two scale-ups executed",
                           lambda: seen('increase(docktor_decisions_total{decision="scale_up",executed="true"}[5m])', 2), 180, every=0.5)
                wait_until("an LLM call ended", lambda: seen("increase(docktor_llm_calls_total[5m])", 1), 180, every=0.5)
                wait_until("the broken source's errors", lambda: seen('increase(docktor_source_errors_total{service="broken"}[5m])', 3), 60, every=0.5)
                wait_until("a guardrail clamp", lambda: seen("increase(docktor_guardrail_clamps_total[5m])", 1), 60, every=0.5)
                wait_until("the workers complete messages",
                           lambda: seen('docktor_observation{metric="queue.rate_out"} > 0', 0.001), 60, every=0.5)
                check_dashboard(prom, answers)
    finally:
        prom.stop()


def check_dashboard(prom: PrometheusServer, answers: bool) -> None:
    board = json.loads(DASHBOARD.read_text())
    empty = []
    for title, expr in expressions(board):
        result = query(prom, fill(expr))
        values = [float(r["value"][1]) for r in result]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {fill(expr)} -> {values}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # the Service variable's query, the way Grafana runs label_values()
    url = f"{prom.url}/api/v1/label/service/values?{urllib.parse.urlencode({'match[]': 'docktor_replicas_max'})}"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert set(json.load(r)["data"]) == set(SERVICES)

    # a few figures whose true value is known from the config and the faults made
    assert total(prom, 'docktor_replicas_max{service="orders"}') == 5
    assert total(prom, 'docktor_target_wait_seconds{service="emails"}') == 2
    assert total(prom, 'docktor_missing_metric_decisions_total{service="broken",metric="queue.backlog"}') >= 1
    assert total(prom, "docktor_decision_log_writable") == 1
    if answers:
        assert total(prom, "docktor_llm_call_tokens_sum") > 0
    else:
        assert total(prom, 'docktor_llm_calls_total{outcome="connection_error"}') >= 1
