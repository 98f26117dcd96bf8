"""``/metrics``, the endpoint: its paths, gzip and OpenMetrics, clients that never send, and the
endpoint of a real daemon (nats-server, the local executor's processes, the decision log on disk):
each decision counted once, a full disk shown and cleared, a port taken, a reloaded config.

The config key, names and values for known records: test_metrics_names_and_values.py."""

from __future__ import annotations

import asyncio
import http.client
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.runtime import metrics_http
from docktor.agent.runtime.exporter import DaemonMetrics, serve
from docktor.agent.runtime.log_reader import read_records
from docktor.agent.runtime.metrics_http import MetricsServer
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.jetstream import make_stream, publish
from tests.support.peers import NatsServer, SmallDisk, free_port
from tests.support.prometheus_text import SERVICE, exported, parse, record, scrape, value
from tests.support.waiting import eventually, wait_until

# --------------------------------------------------------------------------- the endpoint


def test_endpoint_paths_gzip_and_openmetrics() -> None:
    m = DaemonMetrics(parse_config(SERVICE))
    server = MetricsServer("127.0.0.1", 0, m.registry).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse()
        import gzip

        assert r.status == 200 and r.getheader("Content-Encoding") == "gzip"
        assert b"docktor_replicas_max" in gzip.decompress(r.read())
        conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Type", "").startswith("application/openmetrics-text")
        assert r.read().rstrip().endswith(b"# EOF")
        for path, status in (("/", 200), ("/nope", 404)):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert r.status == status
        conn.close()
    finally:
        server.close()


def test_clients_that_never_send_are_bounded_and_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted stand-in for a hostile client: connections that send nothing. At most
    MAX_CONCURRENT_SCRAPES are served at once (more are closed at once), each is dropped after
    the timeout, and the endpoint serves again."""
    monkeypatch.setattr(metrics_http, "SCRAPE_TIMEOUT_S", 5.0)  # long enough that none is dropped before the extra one is turned away
    m = DaemonMetrics(parse_config(SERVICE))
    server = MetricsServer("127.0.0.1", 0, m.registry).start()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(metrics_http.MAX_CONCURRENT_SCRAPES)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert extra.recv(100) == b""  # closed unanswered: every slot is taken
        extra.close()
        for s in idle:  # each is cut after the timeout: the server closes it (recv returns b"")
            s.settimeout(30)
            assert s.recv(100) == b""
        wait_until("a scrape succeeds once the idle clients are dropped", lambda: b"docktor_" in _try_scrape(server.url))
    finally:
        for s in idle:
            s.close()
        server.close()


def _try_scrape(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bytes(r.read())
    except OSError:
        return b""


def daemon_config(tmp: Path, url: str, port: int, marker: str, state: Path | None = None) -> str:
    return f"""
state_dir: {state or tmp / 'state'}
metrics: {{listen: 127.0.0.1:{port}}}
services:
  - name: worker
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)", "{marker}"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 6
    check_interval: 0.3
    policy: rules
    scale_up_by: 1
    cooldown_up: 0
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog_per_replica, op: ">", value: 50}}]
"""


async def test_a_running_daemon_counts_each_decision_once(tmp_path: Path, nats_server: NatsServer) -> None:
    """The real loop: its acting decisions are two lines in the log, one decision in /metrics."""
    await make_stream(nats_server.url)
    port = free_port()
    cfg = parse_config(daemon_config(tmp_path, nats_server.url, port, f"docktor-metrics-{id(tmp_path)}"), tmp_path / "d.yaml", {})
    daemon = Supervisor(cfg, log_path=tmp_path / "state" / "decisions.jsonl")
    exporter = serve(cfg, daemon)
    stop = asyncio.Event()
    try:
        await daemon.open()
        task = asyncio.create_task(daemon.run(stop))
        await publish(nats_server.url, "jobs.a", 250)  # 250 waiting: one step per tick up to 5
        runner = daemon.loops["worker"]
        await eventually("5 replicas", lambda: runner.last_status is not None and runner.last_status.desired == 5)
        live = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")  # served while it ticks
        assert "docktor_decisions_total" in live
        stop.set()
        await task
        samples, _ = parse(await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics"))
    finally:
        stop.set()
        await daemon.close()
        exporter.close()
    records = list(read_records(tmp_path / "state" / "decisions.jsonl"))
    lines = (tmp_path / "state" / "decisions.jsonl").read_text().splitlines()
    executed = [r for r in records if r["executed"]]
    assert len(executed) == 5 and len(lines) == len(records) + len(executed)  # each acting decision: 2 lines

    def total(**labels: str) -> float:
        return sum(v for (name, ls), v in samples.items()
                   if name == "docktor_decisions_total" and set(labels.items()) <= set(ls))

    assert total() == len(records)
    assert total(executed="true") == len(executed) == total(decision="scale_up", executed="true")
    assert value(samples, "docktor_replicas_current", service="worker") == 5
    assert value(samples, "docktor_observation", service="worker", metric="queue.backlog") == 250
    assert value(samples, "docktor_scale_duration_seconds_count", service="worker") == 5
    ticks = value(samples, "docktor_tick_duration_seconds_count", service="worker")
    assert ticks is not None and ticks >= len(records)
    assert value(samples, "docktor_decision_log_writable") == 1


async def test_a_full_disk_shows_in_metrics_and_clears(tmp_path: Path, nats_server: NatsServer, disk: SmallDisk) -> None:
    """issue 12: when the log cannot be written the daemon says so in /metrics (a real 1 MiB tmpfs)."""
    await make_stream(nats_server.url)
    port = free_port()
    cfg = parse_config(daemon_config(tmp_path, nats_server.url, port, f"docktor-metrics-disk-{id(tmp_path)}", disk.path),
                       tmp_path / "d.yaml", {})
    daemon = Supervisor(cfg, log_path=disk.path / "decisions.jsonl")
    exporter = serve(cfg, daemon)
    url = f"http://127.0.0.1:{port}/metrics"

    async def sample(name: str) -> float | None:
        return value(parse(await asyncio.to_thread(scrape, url))[0], name)

    stop = asyncio.Event()
    try:
        await daemon.open()
        task = asyncio.create_task(daemon.run(stop))
        await eventually("two ticks", lambda: daemon.loops["worker"].ticks >= 2)
        assert await sample("docktor_decision_log_writable") == 1
        disk.fill()
        await publish(nats_server.url, "jobs.a", 200)  # the rules want more replicas: refused on the full disk
        await eventually("scale-ups refused on the full disk", lambda: daemon.recorder.refused >= 2)
        t = daemon.loops["worker"].ticks
        await eventually("one more tick (its record fed the metrics)", lambda: daemon.loops["worker"].ticks > t)
        samples, _ = parse(await asyncio.to_thread(scrape, url))
        assert value(samples, "docktor_decision_log_writable") == 0
        refused = value(samples, "docktor_decision_log_refused_actions_total")
        assert refused is not None and refused >= 2
        assert (value(samples, "docktor_decision_log_unrecorded_decisions") or 0) >= 2
        disk.free()
        await eventually("the log writable again", lambda: daemon.recorder.writable)
        t = daemon.loops["worker"].ticks
        await eventually("a tick after it", lambda: daemon.loops["worker"].ticks > t)
        assert await sample("docktor_decision_log_writable") == 1
        stop.set()
        await task
    finally:
        stop.set()
        await daemon.close()
        exporter.close()


def test_daemon_refuses_to_start_when_its_metrics_port_is_taken(tmp_path: Path) -> None:
    """``docktor daemon start --foreground``: one line naming metrics.listen, exit 2, before any tick."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "docktor.yaml"
    config.write_text(daemon_config(tmp_path, "nats://127.0.0.1:1", port, "unused"))
    try:
        done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--foreground", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use"], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "decisions.jsonl").exists() or not (tmp_path / "state" / "decisions.jsonl").read_text()


def test_series_follow_a_reloaded_config() -> None:
    """A reload (the supervisor's on_reload hook, with the reconcile's own plan): a removed
    service's series go, a new one's come, a changed one's start afresh, an unchanged one keeps
    its counts."""
    from docktor.agent.runtime.reconcile import plan_reload

    two = SERVICE + SERVICE.replace("name: w", "name: keep").split("services:", 1)[1]
    before = parse_config(two)
    m = DaemonMetrics(before)
    m.record(record(service="w"))
    m.record(record(service="keep"))
    after = parse_config(
        SERVICE.replace("name: w", "name: keep")
        + SERVICE.replace("name: w", "name: added").split("services:", 1)[1]
    )
    m.reload(after, plan_reload(before, after).restarted)
    m.record(record(service="added"))
    samples, _ = exported(m)
    services = {dict(labels).get("service") for (name, labels) in samples if name.startswith("docktor_")} - {None}
    assert services == {"keep", "added"}  # w went away
    held = dict(decision="hold", source="rules", executed="false")
    assert value(samples, "docktor_decisions_total", service="keep", **held) == 1  # unchanged: kept
    assert value(samples, "docktor_decisions_total", service="added", **held) == 1
    # changed: max_replicas 10 -> 20, its counters start afresh
    changed = parse_config(SERVICE.replace("name: w", "name: keep").replace("policy: rules", "policy: rules\n    max_replicas: 20")
                           + SERVICE.replace("name: w", "name: added").split("services:", 1)[1])
    m.reload(changed, plan_reload(after, changed).restarted)
    m.record(record(service="added"))
    samples, _ = exported(m)
    assert value(samples, "docktor_replicas_max", service="keep") == 20
    assert value(samples, "docktor_decisions_total", service="keep", **held) == 0
    assert value(samples, "docktor_decisions_total", service="added", **held) == 2
