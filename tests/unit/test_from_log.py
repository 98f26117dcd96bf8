"""Rebuilding a load from decision records (agent/sim/from_log.py) and replaying it (replay_log.py).

The records are written as the daemon writes them (an action is an intent line and an outcome
line, merged by the reader), from a synthetic queue whose arrivals and service time are known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.model import ServiceConfig
from docktor.agent.problems import UsageError
from docktor.agent.sim.baselines import ProductionController
from docktor.agent.sim.from_log import arrivals_workload, pick_service, read_decisions, rebuild
from docktor.agent.sim.replay_log import LOGGED, YOURS, AsTheDaemonRuns, config_change, replay, summary_lines
from docktor.agent.timestamps import rfc3339
from tests.support.cli import docktor

T0 = 1_800_000_000.0
SVC = ServiceConfig(name="worker", policy="docktor", check_interval=2, target_wait=10, startup_delay=1,
                    min_replicas=1, max_replicas=8)


def record(t: float, current: int, obs: dict[str, float], *, target: int | None = None, service: str = "worker",
           took: float | None = None) -> list[dict[str, Any]]:
    """The line(s) the daemon writes for one decision at ``T0 + t``; an action is intent + outcome."""
    target = current if target is None else target
    rec: dict[str, Any] = {
        "ts": rfc3339(T0 + t), "service": service, "mode": "autonomous", "current_replicas": current,
        "decision": "hold" if target == current else "scale_up" if target > current else "scale_down",
        "target_replicas": target, "reason": "test", "policy": "docktor", "source": "policy",
        "observations": {**obs, "replicas.running": float(current), "replicas.desired": float(current)},
        "executed": False, "outcome": None, "id": f"{service}-{t:g}",
    }
    if target == current:
        return [rec]
    outcome = {"ts": rfc3339(T0 + t + (took or 0.2)), "service": service, "id": rec["id"], "phase": "outcome",
               "executed": True, "outcome": {"status": "ok", "message": "done", "duration_ms": 1000 * (took or 0.2)}}
    return [{**rec, "phase": "intent"}, outcome]


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def burst_log(tmp_path: Path, *, with_rates: bool = True, gap_after: int | None = None) -> Path:
    """2 replicas of 25 ms (80/s in all) under 100/s for 20 s, then nothing; a scale-in at the end.

    Every 2 s: 200 arrive, 160 are done, so 40 more are queued each interval while it lasts.
    """
    lines: list[dict[str, Any]] = []
    backlog = 0.0
    for k in range(16):
        t = 2.0 * k
        if gap_after is not None and gap_after < k < gap_after + 4:
            continue  # no decision logged (the daemon was down)
        arrived = 200.0 if 0 < k <= 10 else 0.0
        done = min(backlog + arrived, 160.0) if k else 0.0
        if gap_after is not None and k == gap_after + 4:
            arrived, done = 4 * arrived, 4 * done  # the first reading after the gap spans 8 s
        backlog += arrived - done
        obs = {"queue.backlog": backlog, "queue.pending": max(0.0, backlog - 2), "queue.ack_pending": min(backlog, 2.0) * 3}
        dt = 8.0 if gap_after is not None and k == gap_after + 4 else 2.0
        if k and with_rates:
            obs |= {"queue.rate_in": arrived / dt, "queue.rate_out": done / dt}
        lines += record(t, 2, obs, target=1 if k == 15 else None, took=10.0)
    last = {"queue.backlog": 0.0, "queue.pending": 0.0, "queue.ack_pending": 0.0}
    lines += record(32.0, 1, last | ({"queue.rate_in": 0.0, "queue.rate_out": 0.0} if with_rates else {}))
    return write(tmp_path / "decisions.jsonl", lines)


def test_arrivals_service_time_and_what_the_daemon_did_are_rebuilt_from_the_records(tmp_path: Path) -> None:
    recs = read_decisions(burst_log(tmp_path))
    rb = rebuild(recs, pick_service(recs, None), SVC)
    assert rb.trace.messages == 2000  # 10 intervals of 200
    assert set(rb.trace.rates[:20].tolist()) == {100} and not rb.trace.rates[20:].any()  # spread evenly
    assert rb.scenario.service_s == pytest.approx(0.025)  # 2 replicas / 80 per second
    assert (rb.scenario.slo_s, rb.scenario.interval_s, rb.scenario.startup_s) == (10, 2, 1)
    assert rb.scenario.stop_s == pytest.approx(10.0)  # the scale-in's outcome took 10 s
    assert rb.held_per_replica == pytest.approx(3.0)  # 6 in flight for 2 replicas while pending
    # 2 replicas from 0 to 30 s, the scale-in at 30 s took 10 s but the log ends at 32 s: 2 more
    assert rb.actual_replica_seconds == pytest.approx(2 * 32)
    assert rb.actual_actions == 1
    assert any("queue.rate_in x interval at 16 of 16" in line for line in rb.how)
    assert any(line.startswith("service time: 25.0 ms") for line in rb.how)
    assert "gaps: none" in rb.how


def test_without_rates_arrivals_are_the_backlog_change_and_the_service_time_comes_from_the_config(tmp_path: Path) -> None:
    recs = read_decisions(burst_log(tmp_path, with_rates=False))
    with pytest.raises(UsageError, match="set processing_time"):
        rebuild(recs, "worker", SVC)
    rb = rebuild(recs, "worker", SVC.model_copy(update={"processing_time": 0.03}))
    assert rb.trace.messages == 400  # only what stayed queued: a lower bound, and said so
    assert rb.scenario.service_s == 0.03
    assert any("lower bounds" in line for line in rb.unknown)


def test_a_gap_in_the_log_is_reported_and_rate_in_still_covers_it(tmp_path: Path) -> None:
    recs = read_decisions(burst_log(tmp_path, gap_after=4))
    rb = rebuild(recs, "worker", SVC)
    assert rb.trace.messages == 2000
    assert "gaps: 8 s at 8 s" in rb.how
    assert any("inside a gap" in line for line in rb.unknown)


def test_bad_logs_are_one_problem_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--from-log: .*no such file"):
        read_decisions(tmp_path / "nope.jsonl")
    with pytest.raises(UsageError, match="--from-log: .*a directory"):
        read_decisions(tmp_path)
    (tmp_path / "other.jsonl").write_text('{"hello": 1}\nnot json\n')
    with pytest.raises(UsageError, match="--from-log: .*not a decision log"):
        read_decisions(tmp_path / "other.jsonl")
    two = write(tmp_path / "two.jsonl", record(0, 1, {"queue.backlog": 0.0}) + record(0, 1, {}, service="api"))
    recs = read_decisions(two)
    with pytest.raises(UsageError, match="--service: .*2 services: name one \\(api, worker\\)"):
        pick_service(recs, None)
    with pytest.raises(UsageError, match="--service: no decisions of service 'web'"):
        pick_service(recs, "web")
    with pytest.raises(UsageError, match="--from-log: only 1 decisions .* at least 5"):
        rebuild(recs, "worker", SVC)


def test_the_replay_runs_the_users_config_beside_the_alternatives_and_names_the_change(tmp_path: Path) -> None:
    recs = read_decisions(burst_log(tmp_path))
    rb = rebuild(recs, "worker", SVC)
    result = replay(rb, SVC, ["docktor", "target", "oracle"])
    rows = {r["policy"]: r for r in result.rows}
    assert list(rows) == [YOURS, LOGGED, "docktor", "target", "oracle"]
    assert rows[LOGGED]["replica_seconds"] == pytest.approx(64.0)
    assert rows[LOGGED]["slo_attainment"] is None  # the log has no per-message waits
    assert all(rows[p]["messages"] == 2000 for p in (YOURS, "docktor", "target"))
    assert result.best in (YOURS, "docktor", "target")
    text = "\n".join(summary_lines(result))
    assert "what the daemon did under your config (docktor): 64 replica-s, 1 actions" in text
    assert text.count("best row:") == 1


def test_the_config_change_is_the_settings_that_differ_as_yaml() -> None:
    mine = ServiceConfig(name="w", policy="docktor", cooldown_down=4, scale_down_stabilization=10,
                         rules={"scale_down_when": [{"metric": "queue.backlog", "op": "<=", "value": 50}]})
    other = ServiceConfig(name="sim", policy="target", target_per_replica=300)
    change = config_change(mine, other)
    assert change[:2] == ["policy: target", "target_per_replica: 300"]
    assert "cooldown_down: 30" in change and "scale_down_stabilization: 60" in change
    assert "rules: {}" in change
    assert config_change(mine, mine) == []


def test_the_cli_says_one_line_naming_the_flag_and_exits_2(tmp_path: Path) -> None:
    done = docktor("bench", "--from-log", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2 and done.stderr.strip() == f"error: --from-log: {tmp_path / 'missing.jsonl'}: no such file"
    log = burst_log(tmp_path)
    (tmp_path / "docktor.yaml").write_text("services:\n  - name: api\n    executor: local\n    command: [sleep, '60']\n"
                                           "    queue: {kind: nats, url: 'nats://127.0.0.1:4222', stream: JOBS, consumer: WORKERS}\n")
    done = docktor("bench", "--from-log", str(log), "--config", str(tmp_path / "docktor.yaml"))
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: --config: ") and "no service 'worker'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_since_replays_the_window_of_the_log_from_that_time_on(tmp_path: Path) -> None:
    log = burst_log(tmp_path)
    (tmp_path / "docktor.yaml").write_text("services:\n  - name: worker\n    executor: local\n    command: [sleep, '60']\n"
                                           "    queue: {kind: nats, url: 'nats://127.0.0.1:4222', stream: JOBS, consumer: WORKERS}\n")

    def logged(*since: str) -> dict[str, Any]:
        done = docktor("bench", "--from-log", str(log), "--config", str(tmp_path / "docktor.yaml"), "--json", *since)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        return next(r for r in rows if r.get("policy") == LOGGED)

    whole, window = logged(), logged("--since", rfc3339(T0 + 16))
    assert whole["replica_seconds"] == pytest.approx(64.0)  # 2 replicas x 30 s, then 1 x 4 s
    assert window["replica_seconds"] == pytest.approx(whole["replica_seconds"] - 2 * 16)  # the first 16 s left out

    after = rfc3339(T0 + 60)
    done = docktor("bench", "--from-log", str(log), "--config", str(tmp_path / "docktor.yaml"), "--since", after)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: --since: no decision in {log} since {after} (it holds {rfc3339(T0)} to {rfc3339(T0 + 32)})")


def scale_up_log(tmp_path: Path) -> Path:
    """Replicas of 25 ms (40/s each) with 1,000 queued throughout: 1 -> 2 at -4 s (before the
    replay starts), 2 -> 4 at 10 s; the two new ones took work 0.5 s after the decision."""
    lines = record(-4.0, 1, {}, target=2, took=0.3)  # no queue reading yet (the source was not up)
    lines += record(-2.0, 2, {"queue.backlog": 960.0, "queue.pending": 958.0, "queue.ack_pending": 2.0,
                              "queue.rate_in": 70.0, "queue.rate_out": 40.0})
    for k in range(11):
        t = 2.0 * k
        done = 160.0 if k <= 5 else 280.0 if k == 6 else 320.0  # 2 x 40/s x 2 s; 2 + 2 x 1.5 s of 4; 4 x 40/s x 2 s
        obs = {"queue.backlog": 1000.0, "queue.pending": 996.0, "queue.ack_pending": 4.0,
               "queue.rate_in": done / 2, "queue.rate_out": done / 2}
        lines += record(t, 2 if k <= 5 else 4, obs, target=4 if k == 5 else None, took=0.3)
    return write(tmp_path / "decisions.jsonl", lines)


def test_start_up_is_measured_and_the_replay_starts_where_the_log_did(tmp_path: Path) -> None:
    svc = SVC.model_copy(update={"startup_delay": 3.0})
    rb = rebuild(read_decisions(scale_up_log(tmp_path)), "worker", svc)
    assert rb.start == T0  # at -2 s the replicas started at -4 s were still starting (startup_delay 3 s)
    assert rb.scenario.service_s == pytest.approx(0.025)
    assert rb.scenario.startup_s == pytest.approx(0.5)
    assert any(line.startswith("start-up: 0.5 s (measured: the median of 1 scale-ups") for line in rb.how)
    assert rb.initial == 2
    load = arrivals_workload(rb)  # what was queued waits at 0 s, seen by the first tick
    assert int((load.arrivals == 0.0).sum()) == 1000 and load.arrivals.size == rb.trace.messages
    assert rb.first_rates == {"queue.rate_in": 80.0, "queue.rate_out": 80.0}
    assert [(t, n) for t, n, _ in rb.history] == [(-4.0, 1), (-2.0, 2)]  # the policies' memory, not the queue's
    assert rb.held_per_replica == pytest.approx(11 * 4.0 / (6 * 2 + 5 * 4))  # 4 in flight: 2 each of 2, 1 each of 4
    assert [ratio for _, ratio in rb.held_at] == [2.0] * 6 + [1.0] * 5
    assert rb.scenario.stop_s == 0.0 and rb.start_call_s == pytest.approx(0.3)


def test_the_replayed_loop_waits_for_the_executor(tmp_path: Path) -> None:
    rb = rebuild(read_decisions(burst_log(tmp_path)), "worker", SVC)
    result = replay(rb, SVC, ["docktor"])
    for name in (YOURS, "docktor"):
        timeline = result.runs[name].timeline
        changes = [(t, after < before) for (_, before, _), (t, after, _) in zip(timeline, timeline[1:]) if after != before]
        checked = [(t0, t1) for (t0, scale_in), (t1, _) in zip(changes, changes[1:]) if scale_in]
        assert checked, (name, changes)  # scale-ins followed by another change
        for t0, t1 in checked:  # no decision while the log's 10 s scale-in is still under way
            assert t1 - t0 >= rb.scenario.stop_s, (name, changes)


def test_the_replayed_readings_hold_as_many_in_flight_per_busy_replica_as_the_log_had() -> None:
    loop = AsTheDaemonRuns(ProductionController("x", SVC), 2, 0.5, 10.0, held=2.5, held_at=[(0.0, 3.0), (2.0, 5.0)])
    obs = {"queue.pending": 100.0, "queue.ack_pending": 2.0, "queue.backlog": 102.0, "queue.lag": 100.0}
    at_2 = loop.prefetched(obs, 2.0)  # the log's reading at 2 s: 5 per busy replica
    assert (at_2["queue.ack_pending"], at_2["queue.pending"], at_2["queue.backlog"]) == (10.0, 92.0, 102.0)
    at_9 = loop.prefetched(obs, 9.0)  # no reading near: the log's mean, 2.5
    assert (at_9["queue.ack_pending"], at_9["queue.pending"]) == (5.0, 97.0)
    few = loop.prefetched({**obs, "queue.pending": 3.0}, 2.0)  # never more than is pending
    assert (few["queue.ack_pending"], few["queue.pending"]) == (5.0, 0.0)


def test_an_interval_that_began_with_an_empty_queue_starts_its_arrivals_when_the_replicas_began(tmp_path: Path) -> None:
    """1 replica of 25 ms; the queue empty at 0 s; by 2 s, 200 arrived, 30 done (0.75 s of work), 170 queued."""
    lines = record(0.0, 1, {"queue.backlog": 0.0, "queue.pending": 0.0, "queue.ack_pending": 0.0,
                            "queue.rate_in": 0.0, "queue.rate_out": 0.0})
    backlog = 170.0
    lines += record(2.0, 1, {"queue.backlog": backlog, "queue.pending": backlog - 1, "queue.ack_pending": 1.0,
                             "queue.rate_in": 100.0, "queue.rate_out": 15.0})
    for k in range(2, 8):
        backlog += 200 - 80
        lines += record(2.0 * k, 1, {"queue.backlog": backlog, "queue.pending": backlog - 1, "queue.ack_pending": 1.0,
                                     "queue.rate_in": 100.0, "queue.rate_out": 40.0})
    rb = rebuild(read_decisions(write(tmp_path / "decisions.jsonl", lines)), "worker", SVC)
    assert rb.scenario.service_s == pytest.approx(0.025)
    assert any(line.startswith("onsets: 1 intervals began with the queue empty") for line in rb.how)
    arrivals = arrivals_workload(rb).arrivals
    assert arrivals.min() >= 1.25 - 1e-9  # not from 0 s: the replica was idle until 1.25 s
    assert list(rb.trace.rates[:3]) == [0, 200, 100]  # per second: 200 over 1.25 .. 2 s, then 100/s
