"""What ``docktor mcp`` reads and how it bounds it, without the MCP SDK: the decision log read from
its end (rotations, intents joined to outcomes, the byte budget), answers kept small, the
caller's reason made one line, the ``mcp:`` config block and the ``--http`` address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.mcp.address import http_address
from docktor.agent.mcp.views import (
    MAX_ANSWER_CHARS,
    MAX_LIST_ITEMS,
    MAX_TEXT_CHARS,
    ToolFailure,
    bounded,
    compact,
    downsample,
    fit,
    one_line_reason,
)
from docktor.agent.problems import UsageError
from docktor.agent.redact import forget_all, register
from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, Outcome, OutcomeRecord, rfc3339
from docktor.agent.runtime.log_reader import read_records, scan_log

T0 = 1_700_000_000.0


def record(service: str, i: int, **extra: Any) -> DecisionRecord:
    fields: dict[str, Any] = {"current_replicas": 1, "decision": "hold", "target_replicas": 1, "id": f"{service}{i:04d}",
                              "observations": {"queue.backlog": float(i)}, **extra}
    return DecisionRecord(ts=rfc3339(T0 + i), service=service, mode="autonomous", reason=f"r{i}", source="policy", **fields)


def rotated_log(tmp_path: Path) -> Path:
    """200 decisions of two services over several rotated files, one of b's acting across a rotation."""
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=8192, backups=100)
    for i in range(100):
        log.write(record("a", i))
        if i == 60:
            log.write(record("b", i, phase="intent", decision="scale_up", target_replicas=3))
        elif i == 61:
            log.write(OutcomeRecord(ts=rfc3339(T0 + i), service="b", id=f"b{60:04d}",
                                    outcome=Outcome(status="ok", message="3 running", duration_ms=5.0)))
        else:
            log.write(record("b", i))
    log.close()
    return path


def test_reading_from_the_end_gives_what_reading_it_all_gives(tmp_path: Path) -> None:
    path = rotated_log(tmp_path)
    assert len(list(tmp_path.glob("decisions.jsonl.*"))) >= 3
    everything = list(read_records(path))
    for service in ("a", "b", None):
        mine = [r for r in everything if service is None or r["service"] == service]
        for limit in (1, 7, 60, 500):
            scan = scan_log(path, service=service, limit=limit)
            assert scan.complete and scan.records == mine[-limit:], (service, limit)
    # the intent and its outcome, in different files or not, read as one decision
    (acted,) = [r for r in scan_log(path, service="b", limit=100).records if r["id"] == "b0060"]
    assert acted["executed"] is True and acted["outcome"]["status"] == "ok" and "phase" not in acted


def test_a_window_a_filter_and_a_needle(tmp_path: Path) -> None:
    path = rotated_log(tmp_path)
    since = [r for r in scan_log(path, service="a", since=T0 + 90).records]
    assert [r["id"] for r in since] == [f"a{i:04d}" for i in range(90, 100)]
    changes = scan_log(path, limit=5, want=lambda r: r.get("decision") != "hold").records
    assert [r["id"] for r in changes] == ["b0060"]
    found = scan_log(path, limit=1, needle=b'"a0003"', want=lambda r: r.get("id") == "a0003").records
    assert [r["reason"] for r in found] == ["r3"]


def test_the_byte_budget_stops_the_scan_and_says_so(tmp_path: Path) -> None:
    path = rotated_log(tmp_path)
    scan = scan_log(path, service="a", since=T0 - 10, budget=4096)
    assert not scan.complete and 0 < len(scan.records) < 100
    assert scan.records[-1]["id"] == "a0099"  # the newest are the ones read
    assert scan_log(tmp_path / "absent.jsonl", limit=3) == type(scan)([], True, [])


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.write(record("a", 1))
    log.close()
    with path.open("ab") as f:
        f.write(b'{"not":"a decision"\n[1,2]\n\x00\x00garbage\n')
    log = DecisionLog(path)
    log.write(record("a", 2))
    log.close()
    with path.open("ab") as f:
        f.write(b'{"ts":"2023-11-14T22:13:22.000Z","service":"a","torn')  # no newline: cut mid-write
    assert [r["id"] for r in scan_log(path, service="a", limit=10).records] == ["a0001", "a0002"]


def test_answers_are_bounded_and_redacted() -> None:
    forget_all()
    register("hunter2-secret")
    try:
        rec = {"id": "x", "reason": "r" * 5000, "errors": [f"e{i} hunter2-secret" for i in range(100)],
               "observations": {f"m{i:03d}": float(i) for i in range(500)}, "outcome": None, "matched_rules": [],
               "llm": {"reason": "multi\nline\x00text"}, "envelope": {"lo": 1, "hi": float("inf")}}
        out = compact(rec)
        assert len(out["reason"]) == MAX_TEXT_CHARS and out["reason"].endswith("…")
        assert len(out["errors"]) == MAX_LIST_ITEMS + 1 and out["errors"][-1] == f"… {100 - MAX_LIST_ITEMS} more left out"
        assert out["errors"][0] == "e0 ***"
        assert len(out["observations"]) == 81 and out["observations"]["…"] == "420 more left out"
        assert out["llm"]["reason"] == "multi line text"
        assert out["envelope"]["hi"] == "inf"
        assert "outcome" not in out and "matched_rules" not in out  # empty fields are left out
        json.dumps(out, allow_nan=False)
    finally:
        forget_all()

    answer = {"decisions": [{"reason": "x" * 250, "i": i} for i in range(500)]}
    fitted = fit(answer, "decisions")
    assert len(json.dumps(fitted, separators=(",", ":"))) <= MAX_ANSWER_CHARS
    assert fitted["decisions"][-1]["i"] == 499 and "oldest decisions left out" in fitted["left_out"]
    assert bounded("a\nb") == "a b"


def test_downsampling_keeps_the_first_and_the_newest() -> None:
    points = list(range(1000))
    assert downsample(points, 5) == [0, 250, 500, 749, 999]
    assert downsample(points, 1) == [999]
    assert downsample(points[:3], 60) == [0, 1, 2]


def test_the_callers_reason_is_one_line() -> None:
    assert one_line_reason("  incident 42:\n\tbacklog\r\nexpected \x00 soon ") == "incident 42: backlog expected soon"
    assert len(one_line_reason("x " * 1000)) == MAX_TEXT_CHARS
    with pytest.raises(ToolFailure, match="reason: say why"):
        one_line_reason(" \n\t\x01 ")


# --------------------------------------------------------------------------- the config and the address

SERVICE = "services:\n  - {name: w, executor: local, command: 'sleep 1', policy: rules}\n"


def test_the_mcp_block_is_off_by_default_and_takes_booleans_only(tmp_path: Path) -> None:
    assert parse_config(SERVICE, tmp_path / "d.yaml", {}).mcp.allow_apply is False
    cfg = parse_config("mcp: {allow_apply: true, allow_remote: true}\n" + SERVICE, tmp_path / "d.yaml", {})
    assert cfg.mcp.allow_apply is True and cfg.mcp.allow_remote is True
    for block, says in [
        ("mcp: {allow_apply: 'yes'}", "mcp.allow_apply: Input should be a valid boolean"),
        ("mcp: {allow_apply: 1}", "mcp.allow_apply: Input should be a valid boolean"),
        ("mcp: {allow_aply: true}", "mcp.allow_aply: unknown key (did you mean 'allow_apply'?)"),
        ("mcp: true", "mcp: Input should be a valid dictionary"),
    ]:
        with pytest.raises(UsageError) as e:
            parse_config(block + "\n" + SERVICE, tmp_path / "d.yaml", {})
        assert any(str(p).startswith(says) for p in e.value.problems), [str(p) for p in e.value.problems]


@pytest.mark.parametrize(("text", "address"), [
    ("8765", ("127.0.0.1", 8765)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("localhost:8765", ("127.0.0.1", 8765)),
    ("[::1]:8765", ("::1", 8765)),
    ("127.0.0.2:8765", ("127.0.0.2", 8765)),
])
def test_loopback_addresses_are_accepted(text: str, address: tuple[str, int]) -> None:
    assert http_address(text, allow_remote=False, allow_apply=True) == address


@pytest.mark.parametrize(("text", "allow_remote", "allow_apply", "says"), [
    ("0.0.0.0:8765", False, False, "not a loopback address"),
    (":8765", False, False, "not a loopback address"),
    ("192.0.2.1:8765", False, False, "mcp.allow_remote: true"),
    ("0.0.0.0:8765", True, True, "apply_scale is never served beyond this host"),
    ("mcp.example:8765", True, False, "the host must be an IP address or localhost"),
    ("127.0.0.1", False, False, "must be host:port"),
    ("127.0.0.1:65536", False, False, "the port must be between 0"),
])
def test_other_addresses_are_refused_naming_the_option(text: str, allow_remote: bool, allow_apply: bool, says: str) -> None:
    with pytest.raises(UsageError) as e:
        http_address(text, allow_remote=allow_remote, allow_apply=allow_apply)
    (problem,) = e.value.problems
    assert str(problem).startswith("--http: ") and says in str(problem) and repr(text) in str(problem)


def test_a_remote_address_is_allowed_for_reading_when_the_config_says_so() -> None:
    assert http_address("0.0.0.0:8765", allow_remote=True, allow_apply=False) == ("0.0.0.0", 8765)


def test_a_quiet_service_is_found_behind_a_busy_one(tmp_path: Path) -> None:
    """One decision of a quiet service, written before 20,000 of a busy one: the scan reads back to it."""
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=64 * 1024 * 1024)
    log.write(record("quiet", 1))
    for i in range(20_000):
        log.write(record("busy", i))
    log.close()
    scan = scan_log(path, service="quiet", limit=5)
    assert [r["id"] for r in scan.records] == ["quiet0001"] and scan.complete
    assert not scan_log(path, service="quiet", limit=5, budget=1024 * 1024).complete
