"""``docktor bench --from-prometheus URL --query``: a real Prometheus scrapes a real exposition
endpoint whose counter grows at a known rate, and the bench rebuilds that load from a range query.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import docktor
from tests.support.servers import Exporter, PrometheusServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

RATE = 100  # messages per second the counter grows by
SECONDS = 12
CONFIG = """services:
  - name: worker
    executor: local
    command: [sleep, "600"]
    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}
    policy: docktor
    check_interval: 2s
    target_wait: 10s
    startup_delay: 1s
    processing_time: 20ms
    max_replicas: 8
"""


def scraped(server: PrometheusServer) -> float | None:
    """The counter's value as Prometheus last scraped it (None before the first scrape)."""
    q = urllib.parse.urlencode({"query": "jobs_published_total"})
    request = urllib.request.Request(f"{server.url}/api/v1/query?{q}")
    if server.basic_auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(server.basic_auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus that scraped a counter growing ``RATE``/s for ``SECONDS`` s (every sample kept)."""
    exporter = Exporter("jobs_published_total 0\n")
    server = PrometheusServer.start(tmp_path_factory.mktemp("prom"), [exporter.target], scrape_interval="1s")
    try:
        def value() -> float | None:
            return scraped(server)

        wait_until("the first scrape", lambda: value() is not None, 60, every=0.5)
        time.sleep(3)  # a few flat samples before the load
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < SECONDS:
            exporter.text = f"jobs_published_total {int(RATE * elapsed)}\n"
            time.sleep(0.1)
        exporter.text = f"jobs_published_total {RATE * SECONDS}\n"
        wait_until("the last count scraped", lambda: value() == RATE * SECONDS, 30, every=0.5)
        time.sleep(3)  # and a few flat samples after it
        yield server.url
    finally:
        server.stop()
        exporter.stop()


def test_the_rate_series_is_rebuilt_and_replayed_through_the_config(prometheus: str, tmp_path: Path) -> None:
    (tmp_path / "docktor.yaml").write_text(CONFIG)
    done = docktor("bench", "--from-prometheus", prometheus, "--query", "sum(rate(jobs_published_total[5s]))",
                   "--since", "2m", "--config", str(tmp_path / "docktor.yaml"), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    rows = {r["policy"]: r for r in lines if "policy" in r}
    rebuilt = next(x["rebuilt"] for x in lines if "rebuilt" in x)
    print("\n".join(rebuilt["how"] + rebuilt["summary"]))  # shown with -s
    # rate() over 5 s windows, sampled every 2 s, sums back to the counter's growth (its edges extrapolated)
    assert abs(rows["your config"]["messages"] - RATE * SECONDS) <= 0.1 * RATE * SECONDS, rows["your config"]
    assert {"your config", "docktor", "target", "rules", "hpa-tuned", "oracle"} <= set(rows)
    assert "your config, as logged" not in rows  # a rate series says nothing of what ran
    assert rebuilt["how"][0].startswith("arrivals: sum(rate(jobs_published_total[5s])) read as messages per second")
    assert any("processing_time in the config" in line for line in rebuilt["how"])
    assert any("no row of what ran" in line for line in rebuilt["cannot_know"])


def test_a_query_prometheus_rejects_or_that_matches_nothing_is_one_line_naming_query(prometheus: str, tmp_path: Path) -> None:
    (tmp_path / "docktor.yaml").write_text(CONFIG)
    for query, said in (("sum(rate(jobs_published_total[5s])", "error: --query: Prometheus rejected the query: "),
                        ("sum(rate(no_such_metric_total[5s]))", "error: --query: matched no series in the window")):
        done = docktor("bench", "--from-prometheus", prometheus, "--query", query, "--config", str(tmp_path / "docktor.yaml"))
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith(said) and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = docktor("bench", "--from-prometheus", prometheus, "--config", str(tmp_path / "docktor.yaml"))
    assert done.returncode == 2 and done.stderr.startswith("error: --query: --from-prometheus needs the PromQL"), done.stderr


def test_a_prometheus_that_asks_for_credentials_is_read_with_those_of_the_configs_source(tmp_path: Path) -> None:
    """Prometheus behind basic auth: the bench borrows the credentials (read from the environment)
    of the config's prometheus source at that URL; without one, one line says what to do."""
    exporter = Exporter("jobs_published_total 0\n")
    server = PrometheusServer.start(tmp_path / "prom", [exporter.target], basic_auth=("bench", "s3cret-pass"))
    try:
        wait_until("the first scrape", lambda: scraped(server) is not None, 60, every=0.5)
        for n in range(6):  # 6 s at RATE/s, each second's count scraped
            exporter.text = f"jobs_published_total {RATE * n}\n"
            time.sleep(1)
        wait_until("the last count scraped", lambda: scraped(server) == RATE * 5, 30, every=0.5)
        query = "sum(rate(jobs_published_total[3s]))"
        (tmp_path / "bare.yaml").write_text(CONFIG)
        bare = docktor("bench", "--from-prometheus", server.url, "--query", query, "--since", "1m", "--config", str(tmp_path / "bare.yaml"))
        assert bare.returncode == 2, bare.stdout
        assert bare.stderr.strip() == (f"error: --from-prometheus: Prometheus at {server.url} refused a request without credentials: "
                                       "HTTP 401 (a prometheus source in --config that reads this URL lends its credentials)")
        # another service's source reads the same Prometheus (a trailing slash is the same URL)
        (tmp_path / "docktor.yaml").write_text(CONFIG + f"""  - name: scraper
    executor: local
    command: [sleep, "600"]
    policy: rules
    rules: {{scale_up_when: [{{metric: queue.backlog, op: ">", value: 100}}]}}
    sources:
      - name: prom
        kind: prometheus
        url: {server.url}/
        queries: {{queue.backlog: "sum(jobs_published_total)"}}
        username_env: PROM_USER
        password_env: PROM_PASS
""")
        env = {"PROM_USER": "bench", "PROM_PASS": "s3cret-pass"}
        done = docktor("bench", "--from-prometheus", server.url, "--query", query, "--since", "1m",
                       "--config", str(tmp_path / "docktor.yaml"), "--service", "worker", "--json", env=env)
        assert done.returncode == 0, done.stderr
        rebuilt = next(x["rebuilt"] for x in map(json.loads, done.stdout.splitlines()) if "rebuilt" in x)
        assert "access: as scraper's source prom reads it (username_env PROM_USER)" in rebuilt["how"]
        assert rebuilt["how"][0].startswith(f"arrivals: {query} read as messages per second")
        assert "s3cret-pass" not in done.stdout + done.stderr
        wrong = docktor("bench", "--from-prometheus", server.url, "--query", query, "--since", "1m",
                        "--config", str(tmp_path / "docktor.yaml"), "--service", "worker", env={**env, "PROM_PASS": "wrong"})
        assert wrong.returncode == 2
        assert wrong.stderr.strip() == (f"error: --from-prometheus: Prometheus at {server.url} refused the user in PROM_USER: HTTP 401")
    finally:
        server.stop()
        exporter.stop()
