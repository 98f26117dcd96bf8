"""Benchmark: what `docktor mcp`'s log-reading tools cost on a full decision log, side by side with
reading the whole log (what `docktor explain` and `daemon logs` do).

    python -m benchmarks.mcp_log [--services 5] [--repeat 5] [--json]

Writes a decision log as the daemon leaves it at the default rotation (`log.max_bytes` 10 MiB,
5 backups: six files, about 60 MiB), through the real `DecisionLog`: `--services` services ticking
every second in turn, each record with 15 observations, guardrails and an envelope (about 1 KB),
one decision in 20 a scale with its intent and outcome lines. Then times, `--repeat` times each
(median and max), the scans behind each tool (`agent/mcp/views.scan_log`) and a full read of the
log (`read_records`) for comparison.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docktor.agent.runtime.decision_log import DecisionLog, DecisionRecord, Outcome, OutcomeRecord
from docktor.agent.runtime.log_reader import log_files, read_records, scan_log
from docktor.agent.timestamps import rfc3339

OBSERVATIONS = [
    "queue.backlog", "queue.pending", "queue.ack_pending", "queue.lag", "queue.redelivered", "queue.waiting",
    "queue.rate_in", "queue.rate_out", "queue.backlog_per_replica", "queue.rate_out_per_replica",
    "replicas.running", "replicas.desired", "replicas.failed", "cpu.avg", "mem.avg_mb",
]


def sample(service: str, ts: float, rid: str, *, acting: bool, i: int = 0) -> list[DecisionRecord | OutcomeRecord]:
    """One decision as the daemon records it (about 1 KB): a hold, or a scale-up's intent and outcome."""
    obs = {k: float((i * 7 + j) % 500) for j, k in enumerate(OBSERVATIONS)}
    rec = DecisionRecord(
        ts=rfc3339(ts), service=service, mode="autonomous", current_replicas=3,
        decision="scale_up" if acting else "hold", target_replicas=4 if acting else 3, proposal=6,
        reason="queue.backlog 480 / 100 per replica = 5; limited to 4 by the step limit (asked 6)",
        policy="target", source="policy", observations=obs, matched_rules=["queue.backlog > 100 (480)"],
        guardrails=[{"name": "step_limit", "from": 6, "to": 4}],
        envelope={"lo": 2, "hi": 4, "lo_by": "step_limit", "hi_by": "step_limit"}, id=rid,
        phase="intent" if acting else None,
    )
    if not acting:
        return [rec]
    return [rec, OutcomeRecord(ts=rfc3339(ts + 0.2), service=service, id=rid,
                               outcome=Outcome(status="ok", message="3 -> 4 replicas", duration_ms=200.0))]


def fill(path: Path, services: int, t_end: float) -> tuple[int, str, float]:
    """Write decisions ending about ``t_end`` until the log has rotated to its 5 backups; returns the
    number of decisions, the id of the oldest one still in the log, and the time of the newest."""
    log = DecisionLog(path, max_bytes=10 * 1024 * 1024, backups=5)
    per_file = 10 * 1024 * 1024
    approx = int(6 * per_file / 1000)  # records of about 1 KB
    t0 = t_end - approx / services
    n = 0
    i = 0
    while True:
        for s in range(services):
            ts = t0 + i + s / services
            for rec in sample(f"svc{s}", ts, f"{n:016x}", acting=n % 20 == 0, i=i):
                log.write(rec)
            n += 1
        i += 1
        if len(log_files(path)) == 6 and path.stat().st_size > per_file * 0.9:
            break
    log.close()
    oldest = next(read_records(log_files(path)[0]))
    return n, str(oldest["id"]), ts


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, max(times) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "decisions.jsonl"
        started = time.perf_counter()
        n, oldest_id, now = fill(path, args.services, time.time())  # "now" is the newest decision's time
        size = sum(p.stat().st_size for p in log_files(path))
        fill_s = time.perf_counter() - started

        def full_read_last_50() -> int:
            return len(collections.deque(read_records(path, service="svc0"), maxlen=50))

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("get_metrics: the newest decision of one service", lambda: len(scan_log(path, service="svc0", limit=1).records)),
            ("get_recent_decisions: 50 of one service", lambda: len(scan_log(path, service="svc0", limit=50).records)),
            ("get_recent_decisions: 50 of every service", lambda: len(scan_log(path, limit=50).records)),
            ("get_recent_decisions: 50 changes of one service",
             lambda: len(scan_log(path, service="svc0", limit=50, want=lambda r: r.get("decision") != "hold").records)),
            ("get_metric_history: 60 min of one service", lambda: len(scan_log(path, service="svc0", since=now - 3600).records)),
            ("get_metric_history: 24 h of one service (the whole log)",
             lambda: len(scan_log(path, service="svc0", since=now - 86400).records)),
            ("explain_decision: the oldest decision, by id",
             lambda: len(scan_log(path, limit=1, needle=json.dumps(oldest_id).encode(),
                                  want=lambda r: r.get("id") == oldest_id).records)),
            ("for comparison: read_records of the whole log, last 50 of one service", full_read_last_50),
        ]
        rows = []
        for name, fn in cases:
            median, worst, count = timed(fn, args.repeat)
            rows.append({"case": name, "records": count, "median_ms": round(median, 1), "max_ms": round(worst, 1)})

    if args.json:
        print(json.dumps({"decisions": n, "log_mib": round(size / 2**20, 1), "files": 6, "rows": rows}, indent=2))
        return
    print(f"log: {n} decisions of {args.services} services in 6 files, {size / 2**20:.1f} MiB (written in {fill_s:.1f} s)")
    print(f"{'case':<72} {'records':>8} {'median ms':>10} {'max ms':>8}")
    for r in rows:
        print(f"{r['case']:<72} {r['records']:>8} {r['median_ms']:>10} {r['max_ms']:>8}")


if __name__ == "__main__":
    main()
