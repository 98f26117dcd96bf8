"""Benchmark: examples/nats-multi under bursts, Docktor vs the Go Docktor's behaviour, in one run.

    python -m benchmarks.compose_stack [--bursts 3] [--burst-interval 60] [--burst-duration 15] [--with-rules] [--json]

Brings the example up once per system on the Docker engine ``DOCKER_HOST`` points at (unique
project names, free loopback ports), side by side, and runs the real daemon on each:

* ``docktor``: the example's ``docktor.yaml`` as shipped (the ``docktor`` policy);
* ``go-rules``: ``docktor-go-rules.yaml``'s rules, +2/-1 steps, no cooldowns and no
  stabilization, the way the Go Docktor acts on them; same check interval;
* ``docktor-rules`` (``--with-rules``): ``docktor-go-rules.yaml`` as shipped (the same rules with
  Docktor's cooldowns and scale-down stabilization).

The producer adds its periodic bursts to the base load. Every 0.25 s the benchmark samples, on
its own, the stream's arrivals and the consumer's backlog from JetStream and the running
consumers from Docker (``tests/support/examples.py``, shared with the example's end-to-end test). Per
burst it reports: the consumers running when it began (what the previous cycle settled at),
burst start -> scale-up issued (the decision's intent, logged just before the scale command), scale command
-> all requested consumers running (from Docker), burst start -> backlog back under the rules'
scale-up threshold (500) for good, the peak backlog and consumers, and burst start -> consumers
back at ``--settle-to`` (the base load's need) for the rest of the cycle; replica-seconds over
the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

from docktor.agent.runtime.log_reader import read_records
from docktor.agent.timestamps import parse_rfc3339
from docktor.tools.executors.compose import find_compose_cli
from tests.support.examples import Sample, burst_starts, sample_stack, settled_at
from tests.support.peers import free_port, wait_for_consumer

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nats-multi"
THRESHOLD = 500  # the Go rules' scale-up threshold: queue.backlog > 500


@dataclass
class System:
    name: str
    config: str  # the example's file this system runs
    overrides: dict[str, Any]
    project: str = field(default_factory=lambda: f"docktor-bench-{uuid.uuid4().hex[:8]}")
    samples: list[Sample] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tmp: Path | None = None
    missed: int = 0


def compose(system: System, *args: str, timeout: float = 600) -> None:
    cmd = [*find_compose_cli(), "-p", system.project, "-f", str(EXAMPLE / "docker-compose.yaml"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **system.env}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")


def write_config(system: System) -> Path:
    assert system.tmp is not None
    doc = yaml.safe_load((EXAMPLE / system.config).read_text())
    doc["state_dir"] = str(system.tmp / "state")
    doc["compose_file"] = str(EXAMPLE / "docker-compose.yaml")
    doc["mode"] = "autonomous"
    doc["services"][0].update(system.overrides)
    path = system.tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def run_system(system: System, args: argparse.Namespace) -> None:
    system.tmp = Path(tempfile.mkdtemp(prefix=f"{system.name}-"))
    port, monitor = free_port(), free_port()
    system.env = {
        "COMPOSE_PROJECT_NAME": system.project,
        "NATS_PORT": str(port),
        "NATS_MONITOR_PORT": str(monitor),
        "DOCKTOR_METRICS_PORT": str(free_port()),  # the example's metrics.listen: one port per daemon
        "RATE": str(args.rate),
        "BURST_RATE": str(args.burst_rate),
        "BURST_INTERVAL": str(args.burst_interval),
        "BURST_DURATION": str(args.burst_duration),
        "PROCESS_TIME_MS": str(args.process_ms),
        **({"TARGET_WAIT": args.target_wait} if args.target_wait else {}),  # read by docktor.yaml
    }
    url = f"nats://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(compose, system, "up", "-d", "--build")
        await wait_for_consumer(url)
        config = write_config(system)
        log = (system.tmp / "daemon.out").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--config", str(config), "--foreground"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **system.env},
        )
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_stack(url, system.project, system.samples, stop))
        # the producer's first burst comes one interval after it starts; then one per interval
        await asyncio.sleep(args.burst_interval * (args.bursts + 1))
        stop.set()
        system.missed = await sampler
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 90)
        log.close()
        decisions = system.tmp / "state" / "decisions.jsonl"
        system.records = list(read_records(decisions))  # one per decision: intent and outcome merged
    finally:
        await asyncio.to_thread(compose, system, "down", "-v", "--remove-orphans", "-t", "2")
        if args.keep:
            (system.tmp / "samples.json").write_text(json.dumps([asdict(x) for x in system.samples]))
        else:
            shutil.rmtree(system.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- analysis


def analyse(system: System, args: argparse.Namespace) -> dict[str, Any]:
    s = system.samples
    starts = burst_starts(s, (args.rate + args.burst_rate) / 2)
    ups = []
    for r in system.records:
        if r["decision"] == "scale_up" and r["executed"] and (r.get("outcome") or {}).get("status") == "ok":
            # a record's time is its intent's, written just before the executor is called
            ups.append((parse_rfc3339(r["ts"]), r["target_replicas"]))
    bursts = []
    for k, b in enumerate(starts):
        nxt = starts[k + 1] if k + 1 < len(starts) else s[-1].t + 1
        window = [x for x in s if b <= x.t < nxt]
        before = [x for x in s if x.t < b]
        first_up = next(((t, n) for t, n in ups if b <= t < nxt), None)
        up_s = run_s = None
        if first_up is not None:
            up_s = first_up[0] - b
            ready = next((x.t for x in window if x.t >= first_up[0] and x.running >= first_up[1]), None)
            run_s = None if ready is None else ready - first_up[0]
        above = [x.t for x in window if x.backlog > THRESHOLD]
        under_s = None
        if above:
            back = next((x.t for x in window if x.t > above[-1]), None)
            under_s = None if back is None else back - b
        settled = settled_at(s, b, nxt, args.settle_to)
        bursts.append({
            "replicas_at_start": before[-1].running if before else None,
            "burst_start_to_scale_up_s": _r(up_s),
            "scale_command_to_running_s": _r(run_s),
            "backlog_back_under_500_s": _r(under_s) if above else 0.0,
            "peak_backlog": max((x.backlog for x in window), default=0),
            "peak_replicas": max((x.running for x in window), default=0),
            "settled_s": _r(None if settled is None else settled - b),
        })
    replica_s = sum((b.t - a.t) * a.running for a, b in zip(s, s[1:]))
    executed = [r for r in system.records if r["executed"]]
    return {
        "system": system.name,
        "bursts": bursts,
        "replica_seconds": round(replica_s),
        "seconds": round(s[-1].t - s[0].t) if s else 0,
        "mean_replicas": round(replica_s / (s[-1].t - s[0].t), 2) if len(s) > 1 else None,
        "peak_backlog": max((x.backlog for x in s), default=0),
        "scale_actions": len(executed),
        "errors": sum(1 for r in executed if (r.get("outcome") or {}).get("status") == "error"),
        "samples": len(s),
        "samples_missed": system.missed,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _aligned(rows: list[list[str]]) -> None:
    widths = [max(len(c) for c in col) for col in zip(*rows)]
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def print_table(results: list[dict[str, Any]], settle_to: int) -> None:
    keys = [("replicas at start", "replicas_at_start", ""),
            ("-> scale-up issued", "burst_start_to_scale_up_s", " s"),
            ("scale command -> running", "scale_command_to_running_s", " s"),
            ("-> backlog < 500", "backlog_back_under_500_s", " s"),
            ("peak backlog", "peak_backlog", ""), ("peak replicas", "peak_replicas", ""),
            (f"-> settled at <= {settle_to}", "settled_s", " s")]
    rows = [["system", "burst", *(label for label, _, _ in keys)]]
    for r in results:
        for i, b in enumerate(r["bursts"], 1):
            rows.append([r["system"], str(i), *("-" if b[k] is None else f"{b[k]:g}{unit}" for _, k, unit in keys)])
    _aligned(rows)
    print()
    base = next((r["replica_seconds"] for r in results if r["system"] == "go-rules"), None)
    rows = [["system", "replica-s", "vs go-rules", "mean replicas", "peak backlog", "scale actions", "failed", "samples", "missed"]]
    for r in results:
        ratio = f"{r['replica_seconds'] / base:.2f}x" if base else "-"
        rows.append([r["system"], str(r["replica_seconds"]), ratio, str(r["mean_replicas"]), str(r["peak_backlog"]),
                     str(r["scale_actions"]), str(r["errors"]), str(r["samples"]), str(r["samples_missed"])])
    _aligned(rows)


#: the Go Docktor acts on its rules every check, with no cooldown and no stabilization
GO_BEHAVIOUR = {"scale_up_by": 2, "scale_down_by": 1, "cooldown_up": 0, "cooldown_down": 0, "scale_down_stabilization": 0}


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    systems = [System("docktor", "docktor.yaml", {}), System("go-rules", "docktor-go-rules.yaml", GO_BEHAVIOUR)]
    if args.with_rules:
        systems.append(System("docktor-rules", "docktor-go-rules.yaml", {}))
    if args.sequential:
        for s in systems:
            await run_system(s, args)
    else:
        await asyncio.gather(*(run_system(s, args) for s in systems))
    return [analyse(s, args) for s in systems]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compose_stack", description=__doc__.split("\n\n")[0])
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--burst-interval", type=float, default=60.0, help="seconds between burst starts")
    p.add_argument("--burst-duration", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=80.0)
    p.add_argument("--burst-rate", type=float, default=450.0)
    p.add_argument("--process-ms", type=float, default=20.0)
    p.add_argument("--with-rules", action="store_true", help="also run docktor-go-rules.yaml as shipped (with Docktor's cooldowns)")
    p.add_argument("--target-wait", help="docktor.yaml's target_wait (TARGET_WAIT), e.g. 20s; default: as shipped")
    p.add_argument("--settle-to", type=int, default=2, help="consumers the base load needs: settled when at or below")
    p.add_argument("--sequential", action="store_true", help="one system after the other instead of side by side")
    p.add_argument("--keep", action="store_true", help="keep each system's decision log, daemon output and samples (samples.json) in /tmp")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        docker.from_env(timeout=5).ping()
        find_compose_cli()
    except Exception as e:
        print(f"error: needs a Docker engine with Compose v2 (set DOCKER_HOST): {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results, args.settle_to)
        print(f"wall time {time.monotonic() - t0:.0f} s; {args.bursts} bursts of {args.burst_rate:g}/s for "
              f"{args.burst_duration:g} s every {args.burst_interval:g} s over {args.rate:g}/s base load")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
