"""Live wait-SLO attainment through the daemon: a real nats-server, a real worker replica under
the local executor, the real loop. Its decision records carry ``slo``; ``daemon status``,
``explain`` and ``/metrics`` show the same figures; the state file keeps the window and a
restart takes it back. Accuracy against known truths: tests/unit/test_attainment.py and
tests/e2e/test_nats_multi_attainment.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.core.attainment import NO_AGE_SOURCE
from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.exporter import DaemonMetrics, serve
from docktor.agent.runtime.identity import Identity
from docktor.agent.runtime.log_reader import read_records
from docktor.agent.runtime.persist import restore
from docktor.agent.runtime.prose import explain_one
from docktor.agent.runtime.status import status_document
from docktor.agent.runtime.supervisor import Supervisor
from docktor.agent.runtime.wait_slo import why_none
from docktor.tools.sdk import MetricInfo
from tests.support.jetstream import make_stream, publish
from tests.support.peers import NatsServer, free_port
from tests.support.prometheus_text import exported, parse, scrape, value
from tests.support.waiting import eventually

#: messages published at once to a single worker (~60 msg/s): the first start at once, the later
#: ones wait several seconds, beyond the 2 s target
BACKLOG = 400


def config(tmp: Path, url: str, port: int) -> str:
    worker = [sys.executable, "-m", "docktor.agent.demo.worker", "--url", url, "--stream", "JOBS", "--consumer", "WORKERS"]
    return f"""
state_dir: {tmp / 'state'}
metrics: {{listen: 127.0.0.1:{port}}}
services:
  - name: worker
    executor: local
    command: {worker!r}
    stop_grace_period: 5s
    min_replicas: 1
    max_replicas: 1
    check_interval: 0.5
    policy: docktor
    target_wait: 2s
    startup_delay: 1s
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
"""


async def test_records_status_explain_metrics_and_state_file_carry_attainment(tmp_path: Path, nats_server: NatsServer) -> None:
    await make_stream(nats_server.url)
    port = free_port()
    cfg = parse_config(config(tmp_path, nats_server.url, port), tmp_path / "d.yaml", {})
    daemon = Supervisor(cfg, log_path=tmp_path / "state" / "decisions.jsonl", state="write")
    exporter = serve(cfg, daemon)
    stop = asyncio.Event()
    try:
        await daemon.open()
        task = asyncio.create_task(daemon.run(stop))
        loop = daemon.loops["worker"]
        await eventually("the worker runs and two ticks are counted", lambda: loop.last_status is not None
                         and loop.last_status.running == 1 and loop.ticks >= 3, timeout=60)
        await publish(nats_server.url, "jobs.a", BACKLOG)

        def drained() -> bool:
            rec = loop.last_record
            slo = None if rec is None else rec.slo
            return (rec is not None and rec.observations.get("queue.backlog") == 0 and slo is not None
                    and slo["started_5m"] >= BACKLOG * 0.9)

        await eventually("the backlog drained and its starts are counted", drained, timeout=120)
        status = status_document(daemon)
        samples, _ = parse(await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics"))
        last = loop.last_record
        assert last is not None
        stop.set()
        await task
    finally:
        stop.set()
        await daemon.close()
        exporter.close()

    slo = last.slo
    assert slo is not None and slo["target_wait_s"] == 2
    # some started within 2 s (the first ones, at once), the later ones waited longer
    assert 0 < slo["attainment_5m"] < 1 and slo["attainment_60m"] == slo["attainment_5m"]
    assert slo["started_5m"] == pytest.approx(BACKLOG, rel=0.1)
    assert status["services"]["worker"]["slo"] == slo
    assert value(samples, "docktor_wait_slo_attainment", service="worker", window="5m") == slo["attainment_5m"]
    assert value(samples, "docktor_wait_slo_attainment", service="worker", window="60m") == slo["attainment_60m"]

    records = list(read_records(tmp_path / "state" / "decisions.jsonl"))
    logged = next(r for r in reversed(records) if r["id"] == last.id)
    assert logged["slo"] == slo
    said = [line for line in explain_one(logged) if line.lstrip().startswith("wait SLO")]
    assert said == [f"  wait SLO   {100 * slo['attainment_5m']:.1f} % of {slo['started_5m']:,} started within 2 s over 5m; "
                    f"{100 * slo['attainment_60m']:.1f} % of {slo['started_60m']:,} started within 2 s over 60m"]
    # before the first counted interval the records say why there is no figure yet, never 0
    assert records[0]["slo"]["attainment_5m"] is None and "no samples yet" in records[0]["slo"]["why"]

    # the state file keeps the window, and a new daemon on it takes it back
    doc = daemon.store.load("worker")
    assert doc is not None and doc["attainment"]["target_wait_s"] == 2 and doc["attainment"]["spans"]
    again = Supervisor(cfg, state="write")
    await again.open()
    try:
        loop = again.loops["worker"]
        assert loop.restored is not None
        assert any(k.startswith("wait-SLO attainment") for k in loop.restored.kept), loop.restored.kept
        window = loop.state.attainment
        assert window is not None
        share = window.share(again.mono(), 300)
        assert share.value == pytest.approx(slo["attainment_5m"], abs=0.02)  # the spans merged into minutes
    finally:
        await again.close()
    # ... but not for another target_wait: its late ones were counted against 2 s
    other = parse_config(config(tmp_path, nats_server.url, port).replace("target_wait: 2s", "target_wait: 5s"),
                         tmp_path / "d.yaml", {})
    moved = restore(doc, Identity.from_dict(doc["identity"]), other.services[0], wall=doc["saved_at"] + 1, mono=1000.0)
    assert moved.saved.state.attainment is None
    assert any("wait-SLO attainment" in d and "target_wait changed" in d for d in moved.discarded), moved.discarded


def test_a_source_without_the_age_gives_no_attainment_and_says_why() -> None:
    cfg = parse_config(config(Path("/tmp/x"), "nats://127.0.0.1:1", 9464), Path("d.yaml"), {})
    svc = cfg.services[0]
    rates = {"queue.rate_out": MetricInfo("messages_per_second", "out"), "queue.backlog": MetricInfo("messages", "b")}
    assert why_none(svc, {"nats": rates}) == NO_AGE_SOURCE
    assert why_none(svc, {"nats": {**rates, "queue.oldest_age": MetricInfo("seconds", "age")}}) is None

    # in /metrics: the series is there while a figure is told, and goes away when it is not
    m = DaemonMetrics(cfg)
    told: dict[str, Any] = {"target_wait_s": 2.0, "attainment_5m": 0.75, "attainment_60m": 0.9}
    m.record(record(slo=told))
    samples, _ = exported(m)
    assert value(samples, "docktor_wait_slo_attainment", service="worker", window="5m") == 0.75
    m.record(record(slo={"target_wait_s": 2.0, "attainment_5m": None, "attainment_60m": None, "why": NO_AGE_SOURCE}))
    samples, _ = exported(m)
    assert value(samples, "docktor_wait_slo_attainment", service="worker", window="5m") is None
    line = [x for x in explain_one(record(slo={"target_wait_s": 2.0, "attainment_5m": None, "attainment_60m": None,
                                               "why": NO_AGE_SOURCE}).model_dump()) if "wait SLO" in x]
    assert line == [f"  wait SLO   unknown ({NO_AGE_SOURCE})"]


def record(**fields: Any) -> DecisionRecord:
    base: dict[str, Any] = {"ts": "2026-01-01T00:00:00Z", "service": "worker", "mode": "autonomous", "current_replicas": 1,
                            "decision": "hold", "target_replicas": 1, "reason": "r", "source": "policy"}
    return DecisionRecord(**{**base, **fields})
