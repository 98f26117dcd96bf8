"""``make bench`` / ``python -m benchmarks.footprint``: the backbone's figures, printed.

1. Decision throughput: service-decisions per second on one core, through the same
   ``docktor.agent.core.decide.decide`` the daemon calls, for each policy (``docktor`` plans over
   its history with numpy, so it is the slowest).
2. The daemon's RSS and CPU while managing 10 and 100 services at a 1 s interval: a real
   ``docktor daemon start --foreground`` against a real nats-server (a stream and consumer per
   service) and the local executor (one ``sleep`` replica per service), sampled from /proc.
   Ten times the services should cost about ten times the CPU, not more.
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
from pathlib import Path

from docktor.agent.config.load import parse_config
from docktor.agent.core.decide import decide, remember
from docktor.agent.core.state import ServiceState
from docktor.agent.demo.nats_server import NatsServer

RULES_SERVICE = """
services:
  - name: w
    command: ["true"]
    min_replicas: 1
    max_replicas: 50
    policy: {policy}
    target_per_replica: 100
    queue: {{kind: nats, url: "nats://127.0.0.1:1", stream: S, consumer: C}}
    cooldown_up: 10
    cooldown_down: 30
    rules:
      scale_up_when:
        - {{metric: queue.backlog, op: ">", value: 500}}
        - {{metric: queue.rate_in, op: ">", value: 200}}
      scale_down_when:
        - {{metric: queue.backlog, op: "<=", value: 100}}
        - {{metric: queue.rate_in, op: "<", value: 150}}
"""


def services_yaml(url: str, n: int, interval: float) -> str:
    """``n`` services on one NATS server, each with its own stream and one local replica."""
    return "".join(
        f"""
  - name: svc{i}
    executor: local
    command: ["sleep", "3600"]
    min_replicas: 1
    max_replicas: 1
    check_interval: {interval}
    policy: rules
    queue: {{kind: nats, url: "{url}", stream: S{i}, consumer: C{i}}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 100}}]
"""
        for i in range(n)
    )


def decision_throughput(policy: str, seconds: float = 2.0) -> float:
    svc = parse_config(RULES_SERVICE.format(policy=policy), Path("/tmp/bench.yaml"), {}).services[0]
    state = ServiceState()
    # A repeating mix of busy, steady and idle ticks so every guardrail path runs.
    samples = [
        {"queue.backlog": b, "queue.rate_in": r, "queue.rate_out": r * 0.9, "queue.pending": b, "queue.ack_pending": 5.0}
        for b, r in ((1500.0, 300.0), (300.0, 120.0), (20.0, 50.0), (800.0, 90.0), (0.0, 0.0))
    ]
    n, current, now = 0, 3, 0.0
    start = time.process_time()
    while time.process_time() - start < seconds:
        for obs in samples:
            d = decide(svc, obs, current, state, now)
            remember(state, d, now, acted=d.changes, observations=d.observations)
            current = d.target
            now += 1.0
            n += 1
    return n / (time.process_time() - start)


def _proc_sample(pid: int) -> tuple[float, float]:
    """(cpu seconds, RSS MiB) of a process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _make_streams(url: str, n: int) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    for i in range(n):
        await js.add_stream(StreamConfig(name=f"S{i}", subjects=[f"s{i}.>"]))
        await js.add_consumer(f"S{i}", ConsumerConfig(durable_name=f"C{i}"))
        for _ in range(20):
            await js.publish(f"s{i}.x", b"m")
    await nc.close()


def daemon_footprint(services: int = 10, interval: float = 1.0, seconds: float = 30.0) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="docktor-bench-"))
    server = NatsServer.start(tmp / "js")
    url = server.url
    daemon = None
    try:
        asyncio.run(_make_streams(url, services))
        svc_yaml = services_yaml(url, services, interval)
        cfg = tmp / "docktor.yaml"
        cfg.write_text(f"state_dir: {tmp / 'state'}\nservices:{svc_yaml}")
        daemon = subprocess.Popen([sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--config", str(cfg), "--foreground"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5)  # warm-up: imports, connections, first ticks
        cpu0, _ = _proc_sample(daemon.pid)
        t0 = time.monotonic()
        rss_max = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            rss_max = max(rss_max, _proc_sample(daemon.pid)[1])
        cpu1, rss = _proc_sample(daemon.pid)
        elapsed = time.monotonic() - t0
        decisions = sum(1 for _ in (tmp / "state" / "decisions.jsonl").open())
        return {
            "services": services,
            "interval_s": interval,
            "window_s": round(elapsed, 1),
            "cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 2),
            "rss_mib": round(rss, 1),
            "rss_max_mib": round(rss_max, 1),
            "decisions_logged": decisions,
        }
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.footprint", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="daemon sampling window")
    parser.add_argument("--services", type=int, nargs="+", default=[10, 100], metavar="N",
                        help="daemon footprints to measure, one per number of services (default: 10 100)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {
        "decisions_per_s_rules": round(decision_throughput("rules")),
        "decisions_per_s_target": round(decision_throughput("target")),
        "decisions_per_s_docktor": round(decision_throughput("docktor")),
        "daemon": [daemon_footprint(services=n, seconds=args.seconds) for n in args.services],
    }
    if args.json:
        print(json.dumps(results))
    else:
        print(f"rules+guardrails, policy rules : {results['decisions_per_s_rules']:>9,} service-decisions/s (one core)")
        print(f"rules+guardrails, policy target: {results['decisions_per_s_target']:>9,} service-decisions/s (one core)")
        print(f"rules+guardrails, policy docktor: {results['decisions_per_s_docktor']:>8,} service-decisions/s (one core)")
        for d in results["daemon"]:
            print(f"daemon, {d['services']} services @ {d['interval_s']:g} s for {d['window_s']:g} s: "
                  f"CPU {d['cpu_percent']}% of one core, RSS {d['rss_mib']} MiB (max {d['rss_max_mib']} MiB), "
                  f"{d['decisions_logged']} decisions logged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
