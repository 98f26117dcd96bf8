"""``python -m benchmarks.state_writes``: what saving each service's state costs.

Two daemons run side by side on the same machine, at the same time, against the same nats-server:
10 services each at a 1 s interval with the local executor (one ``sleep`` replica per service),
one saving its state (``state="write"``, what ``daemon start`` runs: at once when a clock moved,
else every ``STATE_EVERY_S``; temporary file, fsync, rename, fsync of the folder, in a worker
thread) and one not (``state="off"``). Each reports its CPU time, its ticks, and the wall time
of each save. Then a third daemon starts on the first one's state folder and reports how long
restoring 10 services took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVICE = """
  - name: svc{i}
    executor: local
    command: ["sleep", "3600"]
    min_replicas: 1
    max_replicas: 1
    check_interval: 1s
    policy: rules
    queue: {{kind: nats, url: "{url}", stream: S{i}, consumer: C{i}}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 100}}]
"""


async def _run(config: Path, mode: str, seconds: float) -> dict[str, Any]:
    from docktor.agent.config.load import load_config
    from docktor.agent.runtime.supervisor import Supervisor

    cfg = load_config(config)
    daemon = Supervisor(cfg, state=mode)  # type: ignore[arg-type]
    saves: list[float] = []
    real_save = daemon.store.save

    def timed(service: str, doc: Any) -> None:  # every write of a state file (a tick with nothing due writes none)
        began = time.perf_counter()
        real_save(service, doc)
        saves.append((time.perf_counter() - began) * 1000)

    daemon.store.save = timed  # type: ignore[method-assign]
    began = time.perf_counter()
    await daemon.open()
    opened_ms = (time.perf_counter() - began) * 1000
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.sleep(3)  # warm-up: connections, first ticks
    saves.clear()
    cpu0 = time.process_time()
    ticks0 = sum(r.ticks for r in daemon.loops.values())
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    ticks = sum(r.ticks for r in daemon.loops.values()) - ticks0
    stop.set()
    await task
    await daemon.close()
    sizes = [p.stat().st_size for p in (cfg.state_dir / "state").glob("*.json")] if cfg.state_dir else []  # type: ignore[operator]
    return {"mode": mode, "cpu_s": round(cpu, 3), "ticks": ticks, "open_ms": round(opened_ms, 1), "saves": len(saves),
            "save_ms_p50": round(statistics.median(saves), 2) if saves else None,
            "save_ms_p99": round(sorted(saves)[int(0.99 * (len(saves) - 1))], 2) if saves else None,
            "save_ms_max": round(max(saves), 2) if saves else None, "file_bytes": max(sizes) if sizes else 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state_writes", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--run", choices=["write", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(asyncio.run(_run(args.config, args.run, args.seconds))))
        return 0

    from benchmarks.footprint import _make_streams
    from docktor.agent.demo.nats_server import NatsServer

    tmp = Path(tempfile.mkdtemp(prefix="docktor-bench-state-"))
    server = NatsServer.start(tmp / "js")
    try:
        asyncio.run(_make_streams(server.url, 20))
        configs = {}
        for k, mode in enumerate(("write", "off")):
            body = "".join(SERVICE.format(i=i + 10 * k, url=server.url).replace(f"svc{i + 10 * k}", f"svc{i}") for i in range(10))
            configs[mode] = tmp / f"{mode}.yaml"
            configs[mode].write_text(f"state_dir: {tmp / mode}\nservices:{body}")
        procs = {mode: subprocess.Popen([sys.executable, "-m", "benchmarks.state_writes", "--run", mode, "--config", str(path),
                                         "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True)
                 for mode, path in configs.items()}
        results = {mode: json.loads(p.communicate(timeout=args.seconds + 120)[0]) for mode, p in procs.items()}
        again = json.loads(subprocess.run([sys.executable, "-m", "benchmarks.state_writes", "--run", "write", "--config",
                                           str(configs["write"]), "--seconds", "1"], capture_output=True, text=True,
                                          check=True).stdout)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    w, o = results["write"], results["off"]
    load = os.getloadavg()[0]
    print(f"10 services @ 1 s for {args.seconds:g} s, side by side (load average {load:.1f}):")
    print(f"  saving state:                  CPU {w['cpu_s']:.2f} s for {w['ticks']} ticks "
          f"({1000 * w['cpu_s'] / max(1, w['ticks']):.2f} ms/tick)")
    print(f"  not saving:                    CPU {o['cpu_s']:.2f} s for {o['ticks']} ticks "
          f"({1000 * o['cpu_s'] / max(1, o['ticks']):.2f} ms/tick)")
    print(f"  one save (capture, write, fsync, rename, fsync of the folder, in a thread): median {w['save_ms_p50']} ms, "
          f"p99 {w['save_ms_p99']} ms, max {w['save_ms_max']} ms over {w['saves']} saves; file {w['file_bytes']} bytes")
    print(f"  restoring 10 services at start (files, the log's tail, baselines): open() {again['open_ms']} ms "
          f"(without state: {o['open_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
