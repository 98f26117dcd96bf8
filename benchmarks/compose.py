"""Benchmark: examples/nats-multi under bursts, Docktor vs the Go Docktor's behaviour, in one run.

    python -m benchmarks.compose [--bursts 2] [--burst-interval 60] [--burst-duration 15] [--json]

Brings the example up twice on the Docker engine ``DOCKER_HOST`` points at (unique project names,
free loopback ports), side by side, and runs the real daemon on each:

* ``docktor``: the example's ``docktor.yaml`` as shipped (the Go rules, with Docktor's cooldowns
  and scale-down stabilization);
* ``go-rules``: the same rules, +2/-1 steps, no cooldowns and no stabilization, the way the Go
  Docktor acts on them; same check interval;
* ``docktor-policy`` (``--with-policy``): the example with ``policy: docktor`` (throughput-based
  sizing, the rules as gates).

The producer adds its periodic bursts to the base load. Every 0.25 s the benchmark samples, on
its own, the stream's arrivals and the consumer's backlog from JetStream and the running
consumers from Docker. Per burst it reports: burst start -> scale-up issued (the scale command's
start, from the decision log), scale command -> all requested consumers running (from Docker),
burst start -> backlog back under the scale-up threshold (500) for good, the peak backlog, and
replica-seconds over the whole run.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import nats
import yaml

from docktor.agent.runtime.decision_log import read_records
from docktor.agent.timestamps import parse_rfc3339
from docktor.tools.executors.compose import PROJECT_LABEL, SERVICE_LABEL, find_compose_cli
from tests.peers import free_port, wait_for_consumer

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nats-multi"
THRESHOLD = 500  # the example's scale-up rule: queue.backlog > 500
SAMPLE_S = 0.25


@dataclass
class Sample:
    t: float
    last_seq: int
    backlog: int
    running: int


@dataclass
class System:
    name: str
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
    doc = yaml.safe_load((EXAMPLE / "docktor.yaml").read_text())
    doc["state_dir"] = str(system.tmp / "state")
    doc["compose_file"] = str(EXAMPLE / "docker-compose.yaml")
    doc["mode"] = "autonomous"
    doc["services"][0].update(system.overrides)
    path = system.tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def sample_forever(system: System, url: str, stop: asyncio.Event) -> None:
    client = docker.from_env(timeout=10)
    filters = {"label": [f"{PROJECT_LABEL}={system.project}", f"{SERVICE_LABEL}=consumer"]}
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1)
    js = nc.jetstream()
    try:
        while not stop.is_set():
            t = time.time()
            try:
                stream = await asyncio.wait_for(js.stream_info("EVENTS"), 2)
                info = await js.consumer_info("EVENTS", "WEB_WORKERS", timeout=2)
                running = await asyncio.to_thread(lambda: len(client.containers.list(filters=filters, sparse=True)))
            except Exception as e:  # a missed sample is a gap in the series, not a zero
                system.missed += 1
                if system.missed == 1:
                    print(f"{system.name}: a sample failed: {type(e).__name__}: {e}", file=sys.stderr)
                await asyncio.sleep(SAMPLE_S)
                continue
            system.samples.append(
                Sample(t, int(stream.state.last_seq), int(info.num_pending or 0) + int(info.num_ack_pending or 0), running)
            )
            await asyncio.sleep(max(0.0, SAMPLE_S - (time.time() - t)))
    finally:
        await nc.close()
        client.close()


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
        sampler = asyncio.create_task(sample_forever(system, url, stop))
        # the producer's first burst comes one interval after it starts; then one per interval
        await asyncio.sleep(args.burst_interval * (args.bursts + 1))
        stop.set()
        await sampler
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 90)
        log.close()
        decisions = system.tmp / "state" / "decisions.jsonl"
        system.records = list(read_records(decisions))  # one per decision: intent and outcome merged
    finally:
        await asyncio.to_thread(compose, system, "down", "-v", "--remove-orphans", "-t", "2")
        if not args.keep:
            shutil.rmtree(system.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- analysis


def arrival_rates(samples: list[Sample]) -> list[tuple[float, float]]:
    """(time, msgs/s over the preceding ~1 s) from the stream's last sequence."""
    out = []
    j = 0
    for i, s in enumerate(samples):
        while j < i and s.t - samples[j].t > 1.0:
            j += 1
        if j < i and s.t > samples[j].t:
            out.append((s.t, (s.last_seq - samples[j].last_seq) / (s.t - samples[j].t)))
    return out


def burst_starts(samples: list[Sample], threshold: float) -> list[float]:
    """Bursts: the arrival rate above ``threshold`` for at least 3 s, after at least 5 s below it."""
    starts: list[float] = []
    below_since: float | None = None
    above_since: float | None = None
    counted = False
    for t, r in arrival_rates(samples):
        if r < threshold:
            if below_since is None:
                below_since = t
            above_since, counted = None, False
            continue
        if above_since is None:
            above_since = t if below_since is not None and t - below_since >= 5 else None
        below_since = None
        if above_since is not None and not counted and t - above_since >= 3:
            starts.append(above_since - 1.0)  # the 1 s window that first crossed began a second earlier
            counted = True
    return starts


def analyse(system: System, args: argparse.Namespace) -> dict[str, Any]:
    s = system.samples
    starts = burst_starts(s, (args.rate + args.burst_rate) / 2)
    ups = []
    for r in system.records:
        if r["decision"] == "scale_up" and r["executed"] and (r.get("outcome") or {}).get("status") == "ok":
            end = parse_rfc3339(r["ts"])
            ups.append((end - r["outcome"]["duration_ms"] / 1000, r["target_replicas"]))
    bursts = []
    for k, b in enumerate(starts):
        nxt = starts[k + 1] if k + 1 < len(starts) else s[-1].t + 1
        window = [x for x in s if b <= x.t < nxt]
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
        bursts.append({
            "burst_start_to_scale_up_s": _r(up_s),
            "scale_command_to_running_s": _r(run_s),
            "backlog_back_under_500_s": _r(under_s) if above else 0.0,
            "peak_backlog": max((x.backlog for x in window), default=0),
            "peak_replicas": max((x.running for x in window), default=0),
        })
    replica_s = sum((b.t - a.t) * a.running for a, b in zip(s, s[1:]))
    executed = [r for r in system.records if r["executed"]]
    return {
        "system": system.name,
        "bursts": bursts,
        "replica_seconds": round(replica_s),
        "seconds": round(s[-1].t - s[0].t) if s else 0,
        "mean_replicas": round(replica_s / (s[-1].t - s[0].t), 2) if len(s) > 1 else None,
        "scale_actions": len(executed),
        "errors": sum(1 for r in executed if (r.get("outcome") or {}).get("status") == "error"),
        "samples": len(s),
        "samples_missed": system.missed,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def print_table(results: list[dict[str, Any]]) -> None:
    keys = [("burst -> scale-up issued", "burst_start_to_scale_up_s", "s"),
            ("scale command -> running", "scale_command_to_running_s", "s"),
            ("burst -> backlog < 500", "backlog_back_under_500_s", "s"),
            ("peak backlog", "peak_backlog", ""), ("peak replicas", "peak_replicas", "")]
    print(f"{'system':16}{'burst':>6}" + "".join(f"{label:>27}" for label, _, _ in keys))
    for r in results:
        for i, b in enumerate(r["bursts"], 1):
            cells = []
            for _, key, unit in keys:
                v = b[key]
                cells.append("-" if v is None else f"{v:g}{' ' + unit if unit else ''}")
            print(f"{r['system']:16}{i:>6}" + "".join(f"{c:>27}" for c in cells))
    print()
    print(f"{'system':16}{'replica-s':>12}{'mean replicas':>15}{'scale actions':>15}{'failed':>8}{'samples':>9}{'missed':>8}")
    for r in results:
        print(f"{r['system']:16}{r['replica_seconds']:>12}{r['mean_replicas']!s:>15}{r['scale_actions']:>15}"
              f"{r['errors']:>8}{r['samples']:>9}{r['samples_missed']:>8}")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    systems = [
        System("docktor", {}),
        System("go-rules", {"policy": "rules", "scale_up_by": 2, "scale_down_by": 1, "cooldown_up": 0,
                            "cooldown_down": 0, "scale_down_stabilization": 0}),
    ]
    if args.with_policy:
        systems.append(System("docktor-policy", {"policy": "docktor", "processing_time": f"{args.process_ms:g}ms"}))
    if args.sequential:
        for s in systems:
            await run_system(s, args)
    else:
        await asyncio.gather(*(run_system(s, args) for s in systems))
    return [analyse(s, args) for s in systems]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compose", description=__doc__.split("\n\n")[0])
    p.add_argument("--bursts", type=int, default=2)
    p.add_argument("--burst-interval", type=float, default=60.0, help="seconds between burst starts")
    p.add_argument("--burst-duration", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=80.0)
    p.add_argument("--burst-rate", type=float, default=450.0)
    p.add_argument("--process-ms", type=float, default=20.0)
    p.add_argument("--with-policy", action="store_true", help="also run the example with policy: docktor")
    p.add_argument("--sequential", action="store_true", help="one system after the other instead of side by side")
    p.add_argument("--keep", action="store_true", help="keep each system's decision log and daemon output in /tmp")
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
        print_table(results)
        print(f"wall time {time.monotonic() - t0:.0f} s; {args.bursts} bursts of {args.burst_rate:g}/s for "
              f"{args.burst_duration:g} s every {args.burst_interval:g} s over {args.rate:g}/s base load")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
