"""examples/nats-multi's load in the simulator: its docktor.yaml at several target_wait / startup_delay.

    python -m benchmarks.nats_multi_sim [--target-wait 12,13,14,15] [--startup 3,4,5]

What ``benchmarks/compose_stack.py`` measures on the real stack in four minutes, replayed in seconds
to choose the example's settings: the producer's load (80 msg/s, 450 msg/s for 15 s every 60 s,
the first burst after 60 s, 3 bursts), 48 msg/s per consumer (``PROCESS_TIME_MS=20`` with its
batches), 1 to 10 consumers, 5 s checks. The service is the example's own ``docktor.yaml`` (its
``policy``, rules and guardrails) with ``target_wait`` and ``startup_delay`` varied, beside
``docktor-go-rules.yaml``'s rules acting the Go Docktor's way (no cooldowns, no stabilization).
Simulated consumers take ``--real-startup`` seconds to take work, whatever the config assumes.
Per setting: replica-seconds, SLO attainment and p99 wait (against that target_wait), the
largest backlog, and the mean consumers over the 15 s before each burst (what the previous
cycle settled at).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from docktor.agent.config.load import load_config
from docktor.agent.config.model import ServiceConfig
from docktor.agent.sim.baselines import ProductionController
from docktor.agent.sim.simulator import Scenario, simulate, workload
from docktor.agent.sim.trace_file import Trace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nats-multi"
BASE, BURST, EVERY, FOR, BURSTS = 80, 450, 60, 15, 3
#: the example's consumer: PROCESS_TIME_MS=20 in batches of 10 measures ~48 msg/s
SERVICE_S = 1 / 48.0


def trace() -> Trace:
    rates = [BURST if t >= EVERY and t % EVERY < FOR else BASE for t in range(EVERY * (BURSTS + 1))]
    return Trace("nats-multi", np.array(rates, dtype=np.int64))


def example_service(name: str, **update: object) -> ServiceConfig:
    svc = load_config(EXAMPLE / name).services[0]
    return svc.model_copy(update=update)


def row(label: str, svc: ServiceConfig, slo: float, startup: float) -> str:
    tr = trace()
    scenario = Scenario(service_s=SERVICE_S, cv=0.3, startup_s=startup, slo_s=slo,
                        interval_s=float(svc.check_interval), min_replicas=svc.min_replicas, max_replicas=svc.max_replicas)
    run = simulate(tr, scenario, ProductionController(svc.policy, svc), load=workload(tr, scenario))
    s = run.summary()
    before = []
    for b in range(EVERY, EVERY * (BURSTS + 1), EVERY):
        alive = [a for t, _, a in run.timeline if b - FOR <= t < b]
        before.append(f"{np.mean(alive):.1f}" if alive else "-")
    return (f"| {label} | {s['replica_seconds']:,.0f} | {100 * float(s['slo_attainment']):.2f}% | {s['p99_wait_s']:.1f} | "
            f"{s['max_backlog']} | {', '.join(before)} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nats_multi_sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--target-wait", default="12,13,14,15", help="seconds, comma-separated")
    p.add_argument("--startup", default="3,4,5", help="the config's startup_delay, seconds, comma-separated")
    p.add_argument("--real-startup", type=float, default=3.0,
                   help="seconds a simulated consumer takes to take work (on the real stack: ~1.5-3.5 s to running, then connecting)")
    args = p.parse_args(argv)
    waits = [float(x) for x in args.target_wait.split(",")]
    startups = [float(x) for x in args.startup.split(",")]
    print("| system | replica-s | SLO met | p99 wait s | max backlog | consumers before bursts 1, 2, 3 |")
    print("|---|---:|---:|---:|---:|---|")
    go = {"scale_up_by": 2, "scale_down_by": 1, "cooldown_up": 0.0, "cooldown_down": 0.0, "scale_down_stabilization": 0.0}
    print(row("go-rules (SLO 15 s)", example_service("docktor-go-rules.yaml", **go), 15.0, args.real_startup))
    for wait, startup in itertools.product(waits, startups):
        svc = example_service("docktor.yaml", target_wait=wait, startup_delay=startup)
        print(row(f"docktor target_wait {wait:g} s, startup_delay {startup:g} s", svc, wait, args.real_startup))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
