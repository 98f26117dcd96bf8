"""``/metrics``: the config key, and the metric names, types, help and values for known records (the
breaker, the LLM's outcomes, labels bounded by the config, a bug while updating, a full disk).

The endpoint of a real daemon: test_metrics_endpoint.py. The Prometheus server itself and the
Grafana dashboard's queries: tests/e2e/test_metrics_prometheus.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.problems import UsageError
from docktor.agent.runtime import exporter as metrics_module
from docktor.agent.runtime.decision_log import DecisionLog
from docktor.agent.runtime.exporter import DaemonMetrics, llm_outcome
from docktor.agent.runtime.recorder import Recorder
from tests.support.peers import SmallDisk
from tests.support.prometheus_text import SERVICE, exported, record, value

LLM = 'llm: {provider: openai-compatible, base_url: "http://127.0.0.1:9/v1", model: m}\n'


# --------------------------------------------------------------------------- the config key


@pytest.mark.parametrize(("written", "listen"), [
    ("{listen: 127.0.0.1:9464}", "127.0.0.1:9464"),
    ("{listen: 9464}", "127.0.0.1:9464"),  # a bare port: loopback
    ("{listen: localhost:9464}", "127.0.0.1:9464"),
    ("{listen: '[::1]:9464'}", "[::1]:9464"),
    ("{listen: '0.0.0.0:9464', allow_remote: true}", "0.0.0.0:9464"),
    ("{listen: ':9464', allow_remote: true}", "0.0.0.0:9464"),  # Prometheus's ':port': every address
    ("{}", None),
])
def test_metrics_listen_accepted(written: str, listen: str | None) -> None:
    cfg = parse_config(f"metrics: {written}\n{SERVICE}")
    assert cfg.metrics.listen == listen


def test_metrics_are_off_by_default() -> None:
    assert parse_config(SERVICE).metrics.listen is None


@pytest.mark.parametrize(("written", "says"), [
    ("{listen: 0.0.0.0:9464}", "metrics.listen: not a loopback address"),
    ("{listen: ':9464'}", "metrics.listen: not a loopback address"),
    ("{listen: '[::]:9464'}", "metrics.listen: not a loopback address"),
    ("{listen: 192.168.1.4:9464}", "metrics.listen: not a loopback address"),
    ("{listen: example.com:9464}", "metrics.listen: the host must be an IP address or localhost"),
    ("{listen: 127.0.0.1:0}", "metrics.listen: the port must be between 1 and 65535"),
    ("{listen: 127.0.0.1}", "metrics.listen: must be host:port"),
    ("{listen: [1, 2]}", "metrics.listen: must be host:port"),
    ("{listen: 127.0.0.1:9464, alow_remote: true}", "metrics.alow_remote: unknown key (did you mean 'allow_remote'?)"),
])
def test_metrics_listen_refused_with_the_field_named(written: str, says: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_config(f"metrics: {written}\n{SERVICE}")
    assert str(e.value).startswith(says), str(e.value)


def test_validate_refuses_a_remote_address_in_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "docktor.yaml"
    config.write_text(f"metrics: {{listen: 0.0.0.0:9464}}\n{SERVICE}")
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "validate", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: metrics.listen: not a loopback address"), done.stderr
    assert "allow_remote: true" in lines[0] and "Traceback" not in done.stderr


def test_names_types_and_help_follow_prometheus_conventions() -> None:
    m = DaemonMetrics(parse_config(LLM + SERVICE), health=lambda: {"writable": True})
    _, families = exported(m)
    ours = {name: fam for name, fam in families.items() if name.startswith("docktor_")}
    assert len(ours) >= 30
    for name, fam in ours.items():
        assert fam.documentation.strip(), f"{name} has no HELP"
        if fam.type == "counter":
            # the parser strips _total from a counter family's name; every sample carries it
            assert all(s.name == f"{name}_total" for s in fam.samples), name
        if fam.type == "histogram":
            assert name.endswith(("_seconds", "_tokens")), f"{name}: a histogram names its unit"
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        assert labels <= {"service", "metric", "decision", "source", "executed", "direction", "rule", "guardrail",
                          "operation", "outcome", "type", "version", "mode", "window"}, (name, labels)
    types = {name: fam.type for name, fam in ours.items()}
    assert types["docktor_decisions"] == "counter" and types["docktor_tick_duration_seconds"] == "histogram"
    assert types["docktor_llm_call_duration_seconds"] == "histogram" and types["docktor_llm_call_tokens"] == "histogram"
    assert types["docktor_observation"] == "gauge" and types["docktor_decision_log_writable"] == "gauge"
    # no *_created series: Prometheus does not read them
    assert not any(s.name.endswith("_created") for fam in ours.values() for s in fam.samples)


def test_values_from_known_records() -> None:
    health = {"writable": True, "write_failures_total": 0, "refused_actions_total": 0}
    m = DaemonMetrics(parse_config(LLM + SERVICE), health=lambda: health, in_flight=lambda name: name == "w")
    samples, _ = exported(m)
    # before any decision: the configured figures, and counters at 0 for what the config makes possible
    assert value(samples, "docktor_replicas_min", service="w") == 1 and value(samples, "docktor_replicas_max", service="w") == 10
    assert value(samples, "docktor_decisions_total", service="w", decision="scale_up", source="rules", executed="true") == 0
    assert value(samples, "docktor_decisions_total", service="w", decision="hold", source="fallback", executed="false") == 0
    assert value(samples, "docktor_guardrail_clamps_total", service="w", guardrail="cooldown_up") == 0
    assert value(samples, "docktor_rule_matches_total", service="w", direction="up", rule="queue.backlog > 500") == 0
    assert value(samples, "docktor_llm_calls_total", service="w", outcome="timeout") == 0
    assert value(samples, "docktor_replicas_current", service="w") is None  # nothing read yet: absent, not 0

    # a scale-up the executor carried out (intent and outcome lines, one record in memory)
    m.record(record(
        decision="scale_up", current_replicas=1, target_replicas=3, proposal=5,
        observations={"queue.backlog": 900.0, "queue.rate_in": 12.5, "replicas.running": 1.0},
        matched_rules=["queue.backlog 900 > 500"], guardrails=[{"name": "step_limit", "from": 5, "to": 3}],
        executed=True, outcome={"status": "ok", "message": "3 running", "duration_ms": 1500.0},
        llm={"asked": True, "in_flight": {"asked_at": "x", "age_s": 0.0}},
    ))
    # a hold while the source failed, the LLM's failed call landing, its breaker open
    m.record(record(
        current_replicas=3, target_replicas=3, source="fallback", observations={"replicas.running": 3.0},
        missing=["queue.backlog"], errors=["source: TimeoutError: no answer in 1s", "executor: 1 replica(s) failed"],
        llm={"asked": True, "landed": {"asked_at": "x", "after_s": 2.0}, "error": "timeout", "latency_ms": 2000.0,
             "prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "breaker": {"failures": 1, "until": "x"}},
    ))
    # a scale-down the LLM proposed, its call answered; the executor failed to carry it out
    m.record(record(
        decision="scale_down", current_replicas=3, target_replicas=2, source="llm",
        observations={"queue.backlog": 0.0, "queue.rate_in": 0.0, "replicas.running": 3.0},
        matched_rules=["queue.backlog 0 <= 10", "queue.rate_in 0 < 1"], executed=True,
        outcome={"status": "error", "message": "no", "duration_ms": 300.0},
        llm={"asked": True, "landed": {"asked_at": "x", "after_s": 0.4}, "error": None, "latency_ms": 400.0,
             "prompt_tokens": 700, "completion_tokens": 40, "requests": 2},
    ))
    m.tick("w", 0.004)
    m.tick("w", 0.2)
    health.update(writable=False, unrecorded=2, waiting_outcomes=1, write_failures_total=3, refused_actions_total=2)
    m.log_health()
    samples, _ = exported(m)

    def v(name: str, **labels: str) -> float | None:
        return value(samples, name, service="w", **labels)

    assert v("docktor_decisions_total", decision="scale_up", source="rules", executed="true") == 1
    assert v("docktor_decisions_total", decision="hold", source="fallback", executed="false") == 1
    assert v("docktor_decisions_total", decision="scale_down", source="llm", executed="true") == 1
    assert sum(val for (name, _), val in samples.items() if name == "docktor_decisions_total") == 3
    # the last decision's figures
    assert v("docktor_replicas_current") == 3 and v("docktor_replicas_target") == 2
    assert v("docktor_envelope_lower_replicas") == 1 and v("docktor_envelope_upper_replicas") == 3
    assert v("docktor_observation", metric="queue.backlog") == 0 and v("docktor_observation", metric="replicas.running") == 3
    # queue.backlog was missing in the second record: its series went away, then came back
    assert v("docktor_rule_matches_total", direction="up", rule="queue.backlog > 500") == 1
    assert v("docktor_rule_matches_total", direction="down", rule="queue.backlog <= 10") == 1
    assert v("docktor_rule_matches_total", direction="down", rule="queue.rate_in < 1") == 1
    assert v("docktor_guardrail_clamps_total", guardrail="step_limit") == 1
    assert v("docktor_missing_metric_decisions_total", metric="queue.backlog") == 1
    assert v("docktor_source_errors_total", source="nats") == 1  # a queue: block is named after its kind
    assert v("docktor_executor_errors_total", operation="status") == 1
    assert v("docktor_executor_errors_total", operation="scale") == 1
    assert v("docktor_scale_duration_seconds_count") == 2 and v("docktor_scale_duration_seconds_sum") == pytest.approx(1.8)
    assert v("docktor_tick_duration_seconds_count") == 2 and v("docktor_tick_duration_seconds_bucket", le="0.005") == 1
    # LLM: two calls ended (the first decision only started one), one ok, one timed out
    assert v("docktor_llm_calls_total", outcome="ok") == 1 and v("docktor_llm_calls_total", outcome="timeout") == 1
    assert v("docktor_llm_http_requests_total") == 2
    assert v("docktor_llm_call_duration_seconds_count") == 2 and v("docktor_llm_call_duration_seconds_sum") == pytest.approx(2.4)
    # tokens only for the call that got an answer
    assert v("docktor_llm_call_tokens_count", type="prompt") == 1 and v("docktor_llm_call_tokens_sum", type="prompt") == 700
    assert v("docktor_llm_call_tokens_sum", type="completion") == 40
    assert v("docktor_llm_breaker_open") == 0 and v("docktor_llm_consecutive_failures") == 0  # closed by the answer
    assert v("docktor_llm_calls_in_flight") == 1
    # the decision log's state
    assert value(samples, "docktor_decision_log_writable") == 0
    assert value(samples, "docktor_decision_log_unrecorded_decisions") == 2
    assert value(samples, "docktor_decision_log_waiting_outcomes") == 1
    assert value(samples, "docktor_decision_log_write_failures_total") == 3
    assert value(samples, "docktor_decision_log_refused_actions_total") == 2


def test_breaker_open_while_it_holds_calls_back() -> None:
    m = DaemonMetrics(parse_config(LLM + SERVICE))
    m.record(record(llm={"asked": False, "why": "circuit breaker open after 3 failed calls",
                         "breaker": {"failures": 3, "until": "x", "last_error": "timeout"}}))
    samples, _ = exported(m)
    assert value(samples, "docktor_llm_breaker_open", service="w") == 1
    assert value(samples, "docktor_llm_consecutive_failures", service="w") == 3
    assert value(samples, "docktor_llm_calls_total", service="w", outcome="timeout") == 0  # no call ended here


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "ok"), ("timeout", "timeout"), ("HTTP 500: boom", "http_error"), ("connection failed: ConnectError", "connection_error"),
    ("call ended: CancelledError", "cancelled"), ("ValidationError: 1 validation error", "error"),
])
def test_llm_outcome_labels_are_a_handful(error: str | None, outcome: str) -> None:
    assert llm_outcome(error) == outcome


def test_label_values_stay_bounded_by_the_config() -> None:
    """Observations past the cap, a guardrail the code does not know and a missing metric nobody
    configured add no series; a metric not read this tick is removed, not left stale."""
    m = DaemonMetrics(parse_config(SERVICE))
    many = {f"plugin.m{i}": float(i) for i in range(metrics_module.MAX_OBSERVATION_SERIES + 50)}
    m.record(record(observations=many, guardrails=[{"name": "made_up", "from": 1, "to": 2}], missing=["nobody.asked"]))
    samples, _ = exported(m)
    observed = [k for k in samples if k[0] == "docktor_observation"]
    assert len(observed) == metrics_module.MAX_OBSERVATION_SERIES
    assert value(samples, "docktor_guardrail_clamps_total", service="w", guardrail="other") == 1
    assert not any(k[0] == "docktor_missing_metric_decisions_total" and ("metric", "nobody.asked") in k[1] for k in samples)
    m.record(record(observations={"queue.backlog": 1.0}))
    samples, _ = exported(m)
    assert [dict(k[1])["metric"] for k in samples if k[0] == "docktor_observation"] == ["queue.backlog"]


def test_a_bug_while_updating_never_reaches_the_tick(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("health exploded")

    m = DaemonMetrics(parse_config(SERVICE))
    m._health = broken
    m.record(record())  # does not raise
    m.record(record())
    assert sum("health exploded" in r.getMessage() for r in caplog.records) == 1  # said once
    samples, _ = exported(m)
    assert value(samples, "docktor_decisions_total", service="w", decision="hold", source="rules", executed="false") == 2


def test_recorder_on_a_full_disk_reads_unwritable(disk: SmallDisk) -> None:
    """A real Recorder writing on a real full tmpfs (every write: ENOSPC) reports it through /metrics."""
    disk.fill()
    recorder = Recorder(DecisionLog(disk.path / "decisions.jsonl"))
    m = DaemonMetrics(parse_config(SERVICE), health=recorder.health)
    assert recorder.write(record()) is False
    recorder.refuse()
    m.record(record())
    samples, _ = exported(m)
    assert value(samples, "docktor_decision_log_writable") == 0
    assert value(samples, "docktor_decision_log_write_failures_total") == 1
    assert value(samples, "docktor_decision_log_refused_actions_total") == 1
    assert value(samples, "docktor_decision_log_unrecorded_decisions") == 1
