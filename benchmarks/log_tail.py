"""Benchmark: the newest decisions of a big decision log, through the CLI as a user asks for them.

    python -m benchmarks.log_tail [--mib 400] [--services 20] [--repeat 3] [--folder DIR] [--json]

Writes (once, kept in ``--folder`` for the next run) a decision log of ``--mib`` MiB in one file,
as a daemon with ``log.max_bytes`` raised that far leaves it: ``--services`` services deciding in
turn, each record with 15 observations, a guardrail and an envelope (about 1 KB; the lines are
the real ``DecisionRecord``'s, with their time and id changed), one decision in 20 a scale with
its intent and outcome lines. Then times, ``--repeat`` times each (whole processes, start-up
included; median and max), what issue 21 found reading the whole file:

* ``docktor daemon logs -n 20``, ``--since 10m``, ``--service svc3 -n 20``;
* ``docktor explain -n 5``, ``explain -n 5 --changes``;
* ``docktor --version``, the start-up every command pays, for scale.

To compare with an older checkout, run the same commands with its ``docktor`` on the same folder
(docs/benchmarks.md has the side-by-side run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.mcp_log import sample

CONFIG = """state_dir: {state}
log: {{max_bytes: {max_bytes}}}
services:
{services}"""

SERVICE = """  - name: svc{i}
    executor: local
    command: ["true"]
    queue: {{kind: nats, url: "nats://127.0.0.1:9", stream: S{i}, consumer: C}}
"""


def _lines(service: str, ts: float, rid: str, acting: bool) -> bytes:
    return b"".join(rec.line() for rec in sample(service, ts, rid, acting=acting, i=int(ts)))


def write_log(path: Path, mib: int, services: int, t_end: float) -> int:
    """About ``mib`` MiB of decisions ending at ``t_end``, one per second per service in turn."""
    sample = len(_lines("svc0", t_end, "0" * 16, False))
    total = mib * 2**20 // sample
    t0 = t_end - total / services
    written = 0
    with path.open("wb") as f:
        os.fchmod(f.fileno(), 0o600)
        chunk: list[bytes] = []
        for n in range(total):
            chunk.append(_lines(f"svc{n % services}", t0 + n / services, f"{n:016x}", n % 20 == 0))
            if len(chunk) == 2000:
                written += f.write(b"".join(chunk))
                chunk.clear()
        written += f.write(b"".join(chunk))
    return written


def timed(args: list[str], repeat: int) -> tuple[float, float, int]:
    times, lines = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"})
        times.append(time.perf_counter() - t)
        lines = len(done.stdout.splitlines())
    return statistics.median(times), max(times), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=400)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None, help="where the log is written and kept (default: a temporary folder)")
    parser.add_argument("--docktor", default=None, help="the docktor command to time (default: this Python's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.mkdtemp(prefix="docktor-log-tail-"))
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = state / "decisions.jsonl"
    if not log.exists() or log.stat().st_size < args.mib * 2**20 * 0.95:
        began = time.perf_counter()
        size = write_log(log, args.mib, args.services, time.time())
        print(f"wrote {size / 2**20:.0f} MiB in {time.perf_counter() - began:.0f} s: {log}", file=sys.stderr)
    config = folder / "docktor.yaml"
    config.write_text(CONFIG.format(state=state, max_bytes=2 * log.stat().st_size,
                                    services="".join(SERVICE.format(i=i) for i in range(args.services))))
    docktor = args.docktor.split() if args.docktor else [sys.executable, "-m", "docktor.agent.cli"]
    cases = [
        ("docktor --version (start-up, for scale)", ["--version"]),
        ("daemon logs -n 20", ["daemon", "logs", "--config", str(config), "-n", "20"]),
        ("daemon logs --since 10m", ["daemon", "logs", "--config", str(config), "--since", "10m"]),
        ("daemon logs --service svc3 -n 20", ["daemon", "logs", "--config", str(config), "--service", "svc3", "-n", "20"]),
        ("explain -n 5", ["explain", "--config", str(config), "-n", "5"]),
        ("explain -n 5 --changes", ["explain", "--config", str(config), "-n", "5", "--changes"]),
    ]
    rows = []
    for name, argv in cases:
        median, worst, lines = timed([*docktor, *argv], args.repeat)
        rows.append({"case": name, "median_s": round(median, 3), "max_s": round(worst, 3), "output_lines": lines})
    size_mib = round(log.stat().st_size / 2**20)
    if args.json:
        print(json.dumps({"log_mib": size_mib, "services": args.services, "repeat": args.repeat, "rows": rows}, indent=2))
        return
    print(f"decision log: {size_mib} MiB in one file, {args.services} services; {args.repeat} runs each, whole processes")
    print(f"{'command':<42} {'median s':>9} {'max s':>7} {'lines':>6}")
    for r in rows:
        print(f"{r['case']:<42} {r['median_s']:>9.3f} {r['max_s']:>7.3f} {r['output_lines']:>6}")


if __name__ == "__main__":
    main()
