"""The Prometheus source against a real Prometheus (Debian's) scraping a real HTTP target every
second: exact values, no/several/stale samples are missing (never 0), a restart, basic auth,
TLS with a private CA and a client certificate; scripted stand-ins only for HTTP 500, garbage and
a bearer-token proxy."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from docktor.tools.sdk import STANDARD_METRICS, SourceError, admit
from docktor.tools.sources.prometheus import PrometheusSettings as Settings
from docktor.tools.sources.prometheus import PrometheusSource
from tests.support.readings import opened, settling
from tests.support.servers import Certificates, Exporter, PrometheusServer, make_certificates

CANARY = "canary-pw-31b7"
METRICS = 'jobs_waiting{queue="jobs"} 7\njobs_waiting{queue="other"} 3\njobs_done_total 42\n'


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter(METRICS)
    yield e
    e.stop()


@pytest.fixture
def prom(tmp_path: Path, exporter: Exporter) -> Iterator[PrometheusServer]:
    p = PrometheusServer.start(tmp_path / "prom", [exporter.target])
    try:
        yield p
    finally:
        p.stop()


def settings(url: str, queries: dict[str, Any], **extra: Any) -> Settings:
    return Settings.model_validate({"kind": "prometheus", "url": url, "queries": queries, "timeout": 2, **extra})


@pytest.fixture
async def make_source() -> AsyncIterator[Callable[..., PrometheusSource]]:
    async with opened(PrometheusSource, clocked=False) as make:
        yield make

read_settled = settling(within=30, every=0.2)


# --------------------------------------------------------------------------- settings


def test_metrics_are_the_names_the_queries_map_to() -> None:
    s = settings("http://h:9090", {"queue.backlog": "sum(x)", "latency.p95": "histogram_quantile(0.95, y)"})
    provided = PrometheusSource.metrics_for(s)
    assert set(provided) == {"queue.backlog", "latency.p95"}
    assert provided["queue.backlog"] == STANDARD_METRICS["queue.backlog"]
    assert "histogram_quantile" in provided["latency.p95"].help


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"queries": {}}, "at least one"),
        ({"queries": {"Backlog": "x"}}, "not a metric name"),
        ({"queries": {"replicas.running": "x"}}, "from the executor"),
        ({"queries": {"queue.backlog": " "}}, "empty query"),
        ({"queries": {"queue.backlog": {"query": "x", "signed": True}}}, "a standard metric (messages) is never below 0"),
        ({"queries": {"jobs.delta": 5}}, "must be a PromQL query, or {query: <PromQL>, signed: true}"),
        ({"queries": {"jobs.delta": {"query": "x", "sign": True}}}, "Extra inputs"),
        ({"queries": {"jobs.delta": {"signed": True}}}, "Field required"),
        ({"url": f"http://u:{CANARY}@h:9090"}, "no credentials"),
        ({"url": "h:9090"}, "http(s) URL"),
        ({"username_env": "U"}, "go together"),
        ({"bearer_token_env": "T", "username_env": "U", "password_env": "P"}, "not both"),
        ({"tls": {"ca_file": "ca.pem"}}, "https://"),
    ],
)
def test_settings_reject_bad_input(extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"kind": "prometheus", "queries": {"queue.backlog": "sum(x)"}, **extra})
    errors = info.value.errors()
    assert any(fragment in e["msg"] for e in errors), errors
    assert all(CANARY not in e["msg"] for e in errors)


def test_a_query_may_declare_itself_signed() -> None:
    s = settings("http://h:9090", {"queue.backlog": "sum(x)", "jobs.delta": {"query": "delta(jobs[5m])", "signed": True},
                                   "jobs.age": {"query": "max(age)"}})
    provided = PrometheusSource.metrics_for(s)
    assert provided["jobs.delta"].signed and "delta(jobs[5m])" in provided["jobs.delta"].help
    assert not provided["jobs.age"].signed and not provided["queue.backlog"].signed


def test_plain_queries_dump_as_before_signed_existed() -> None:
    # the daemon fingerprints a source by its settings' dump: an upgrade must not make it "another source"
    s = settings("http://h:9090", {"queue.backlog": "sum(x)", "jobs.delta": {"query": "d", "signed": True}})
    assert s.model_dump()["queries"] == {"queue.backlog": "sum(x)", "jobs.delta": {"query": "d", "signed": True}}
    assert Settings.model_validate_json(s.model_dump_json()) == s


# --------------------------------------------------------------------------- values


async def test_exact_values_and_what_is_missing(prom: PrometheusServer, exporter: Exporter, make_source: Any) -> None:
    src = make_source(settings(prom.url, {
        "queue.backlog": "sum(jobs_waiting)",
        "queue.pending": 'jobs_waiting{queue="jobs"}',
        "jobs.done": "jobs_done_total",
        "jobs.split": "jobs_waiting",  # two series, not aggregated
        "jobs.none": "nothing_like_this",  # no series
        "jobs.scalar": "scalar(sum(jobs_waiting)) * 2",
    }))
    metrics = await read_settled(src.read, lambda m: "queue.backlog" in m)
    assert metrics == {"queue.backlog": 10.0, "queue.pending": 7.0, "jobs.done": 42.0, "jobs.scalar": 20.0}
    assert "2 series" in src.last_missing["jobs.split"]
    assert "no sample" in src.last_missing["jobs.none"]

    exporter.text = METRICS.replace(" 7\n", " 12\n")
    changed = await read_settled(src.read, lambda m: m.get("queue.pending") == 12.0)
    assert changed["queue.backlog"] == 15.0


async def test_bad_query_is_missing_with_prometheus_reason(prom: PrometheusServer, make_source: Any) -> None:
    src = make_source(settings(prom.url, {"queue.backlog": "sum(jobs_waiting)", "jobs.bad": "sum(("}))
    await read_settled(src.read, lambda m: "queue.backlog" in m)
    assert "rejected the query" in src.last_missing["jobs.bad"] and "parse error" in src.last_missing["jobs.bad"]
    with pytest.raises(SourceError, match="no query gave a value: jobs.bad: Prometheus rejected the query"):
        await make_source(settings(prom.url, {"jobs.bad": "sum(("})).read()


async def test_a_negative_answer_is_refused_by_admit_unless_the_query_is_signed(tmp_path: Path, make_source: Any) -> None:
    # An exporter gone wrong reports a backlog of -50 (issue 21: it scaled a service from 3 to 1).
    exporter = Exporter("jobs_backlog -50\nroom_celsius_delta -50\n")
    prom = PrometheusServer.start(tmp_path / "prom", [exporter.target])
    try:
        s = settings(prom.url, {
            "queue.backlog": "sum(jobs_backlog)",
            "jobs.delta": "sum(room_celsius_delta)",
            "temperature.delta": {"query": "sum(room_celsius_delta)", "signed": True},
        })
        reading = await read_settled(make_source(s).read, lambda m: len(m) == 3)
        assert reading == {"queue.backlog": -50.0, "jobs.delta": -50.0, "temperature.delta": -50.0}  # what Prometheus says
        kept, refused = admit(reading, PrometheusSource.metrics_for(s))  # what the daemon does with every reading
        assert kept == {"temperature.delta": -50.0}
        assert refused == {
            "queue.backlog": "-50 is negative, which queue.backlog cannot be",
            "jobs.delta": "-50 is negative, which jobs.delta cannot be unless declared signed",
        }
    finally:
        prom.stop()
        exporter.stop()


async def test_stopped_target_goes_stale_and_is_missing_never_zero(
    prom: PrometheusServer, exporter: Exporter, make_source: Any
) -> None:
    src = make_source(settings(prom.url, {"queue.backlog": "sum(jobs_waiting)", "up.test": 'up{job="test"}'}))
    await read_settled(src.read, lambda m: m.get("queue.backlog") == 10.0)

    exporter.stop()  # the next scrape fails: Prometheus writes staleness markers for its series
    down = await read_settled(src.read, lambda m: m.get("up.test") == 0.0)
    assert "queue.backlog" not in down  # missing, not 0
    assert "no sample" in src.last_missing["queue.backlog"]

    back = Exporter(METRICS.replace(" 3\n", " 5\n"), port=exporter.port)
    try:
        again = await read_settled(src.read, lambda m: "queue.backlog" in m)
        assert again == {"queue.backlog": 12.0, "up.test": 1.0}
    finally:
        back.stop()


async def test_prometheus_restart_reads_missing_then_exact_again(prom: PrometheusServer, make_source: Any) -> None:
    src = make_source(settings(prom.url, {"queue.backlog": "sum(jobs_waiting)"}))
    assert (await read_settled(src.read, lambda m: True)) == {"queue.backlog": 10.0}
    prom.stop()
    with pytest.raises(SourceError, match="cannot reach Prometheus at http://127.0.0.1"):
        await src.read()
    prom.launch()  # same port, same data folder
    assert (await read_settled(src.read, lambda m: True, within=60)) == {"queue.backlog": 10.0}


# --------------------------------------------------------------------------- credentials and TLS


async def test_basic_auth_from_the_environment(tmp_path: Path, exporter: Exporter, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    p = PrometheusServer.start(tmp_path / "prom", [exporter.target], basic_auth=("docktor", "right-pass"))
    try:
        monkeypatch.setenv("PROM_USER", "docktor")
        monkeypatch.setenv("PROM_PASS", "right-pass")
        creds = {"username_env": "PROM_USER", "password_env": "PROM_PASS"}
        src = make_source(settings(p.url, {"queue.backlog": "sum(jobs_waiting)"}, **creds))
        assert (await read_settled(src.read, lambda m: True)) == {"queue.backlog": 10.0}
        monkeypatch.setenv("PROM_PASS", CANARY)
        with pytest.raises(SourceError, match="refused the user in PROM_USER: HTTP 401") as info:
            await make_source(settings(p.url, {"queue.backlog": "sum(jobs_waiting)"}, **creds)).read()
        assert CANARY not in str(info.value)
        with pytest.raises(SourceError, match="without credentials"):
            await make_source(settings(p.url, {"queue.backlog": "sum(jobs_waiting)"})).read()
    finally:
        p.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


async def test_tls_with_a_private_ca_and_a_client_certificate(
    tmp_path: Path, exporter: Exporter, certs: Certificates, make_source: Any
) -> None:
    p = PrometheusServer.start(tmp_path / "prom", [exporter.target], tls=certs)
    try:
        tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
        src = make_source(settings(p.url, {"queue.backlog": "sum(jobs_waiting)"}, tls=tls))
        assert (await read_settled(src.read, lambda m: True)) == {"queue.backlog": 10.0}
        with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await make_source(settings(p.url, {"queue.backlog": "x"}, tls={**tls, "ca_file": str(certs.other_ca)})).read()
        # the server requires a client certificate: without one, the handshake fails
        with pytest.raises(SourceError, match="cannot reach Prometheus"):
            await make_source(settings(p.url, {"queue.backlog": "x"}, tls={"ca_file": str(certs.ca)})).read()
        with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await make_source(settings(p.url, {"queue.backlog": "x"})).read()  # the system store knows no private CA
    finally:
        p.stop()


# --------------------------------------------------------------------------- scripted stand-ins


class Scripted:
    """A scripted stand-in HTTP server: answers every request with ``respond(handler)``."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                respond(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.hits = 0
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(h: http.server.BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    h.send_response(code)
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


async def test_scripted_http_500_is_retried_then_a_source_error(make_source: Any) -> None:
    hits: list[int] = []

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        hits.append(1)
        _reply(h, 500, b'{"status":"error","error":"boom"}')

    s = Scripted(respond)
    try:
        with pytest.raises(SourceError, match=r"HTTP 500 \(boom\)"):
            await make_source(settings(s.url, {"queue.backlog": "x"})).read()
        assert len(hits) == 3  # bounded retries
    finally:
        s.close()


async def test_scripted_garbage_is_a_source_error(make_source: Any) -> None:
    s = Scripted(lambda h: _reply(h, 200, b"<html>not prometheus</html>"))
    try:
        with pytest.raises(SourceError, match="not a query API answer"):
            await make_source(settings(s.url, {"queue.backlog": "x"})).read()
    finally:
        s.close()


async def test_scripted_bearer_proxy_gets_the_token_from_the_environment(
    prom: PrometheusServer, make_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for an authenticating reverse proxy in front of the real Prometheus."""

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.headers.get("authorization") != "Bearer t0ken-value":
            _reply(h, 401, b"unauthorized")
            return
        body = h.rfile.read(int(h.headers["content-length"]))
        req = urllib.request.Request(f"{prom.url}{h.path}", data=body, method="POST")
        req.add_header("content-type", h.headers["content-type"])
        with urllib.request.urlopen(req, timeout=5) as r:
            _reply(h, r.status, r.read())

    s = Scripted(respond)
    try:
        monkeypatch.setenv("PROM_TOKEN", "t0ken-value")
        src = make_source(settings(s.url, {"queue.backlog": "sum(jobs_waiting)"}, bearer_token_env="PROM_TOKEN"))
        assert (await read_settled(src.read, lambda m: True)) == {"queue.backlog": 10.0}
        monkeypatch.setenv("PROM_TOKEN", CANARY)
        with pytest.raises(SourceError, match="refused the token in PROM_TOKEN: HTTP 401") as info:
            await make_source(settings(s.url, {"queue.backlog": "x"}, bearer_token_env="PROM_TOKEN")).read()
        assert CANARY not in str(info.value)
    finally:
        s.close()
