"""``python -m benchmarks.metrics_footprint``: what serving /metrics costs the daemon, side by side.

Two real ``docktor daemon start --foreground`` processes run at the same time on the same config
(10 services at a 1 s interval, a real nats-server with 10 streams, the local executor with one
``sleep`` replica per service), one with ``metrics: {listen: 127.0.0.1:PORT}`` and one without.
Debian's ``prometheus`` scrapes the first every second (``--scraper python`` scrapes it from this
process instead, where Prometheus is not installed). CPU and RSS of both daemons are sampled from
/proc over the same window; the scrape's duration and size are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.footprint import _make_streams, _proc_sample, services_yaml
from docktor.agent.demo.nats_server import NatsServer, free_port


def start_daemon(dir: Path, services: str, metrics_port: int | None) -> subprocess.Popen[bytes]:
    dir.mkdir(parents=True, exist_ok=True)
    metrics = f"metrics: {{listen: 127.0.0.1:{metrics_port}}}\n" if metrics_port else ""
    (dir / "docktor.yaml").write_text(f"state_dir: {dir / 'state'}\n{metrics}services:{services}")
    return subprocess.Popen([sys.executable, "-m", "docktor.agent.cli", "daemon", "start", "--foreground",
                             "--config", str(dir / "docktor.yaml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_prometheus(dir: Path, target: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: docktor\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={dir / 'prometheus.yml'}", f"--storage.tsdb.path={dir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def prom_query(port: int, expr: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            result = json.load(r)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


class PythonScraper:
    """Scrape once a second from this process (when Prometheus is not installed)."""

    def __init__(self, url: str):
        self.url, self.stop, self.durations = url, threading.Event(), []  # type: ignore[var-annotated]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
                self.durations.append(time.perf_counter() - t)
            except OSError:
                pass


def run(services: int = 10, interval: float = 1.0, seconds: float = 60.0, scraper: str = "prometheus") -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="docktor-metrics-bench-"))
    server = NatsServer.start(tmp / "js")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(_make_streams(server.url, services))
        svc = services_yaml(server.url, services, interval)
        port = free_port()
        with_metrics = start_daemon(tmp / "with", svc, port)
        without = start_daemon(tmp / "without", svc, None)
        procs += [with_metrics, without]
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # the endpoint answers once the daemon is up
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    size = len(r.read())
                break
            except OSError:
                if time.monotonic() > deadline or with_metrics.poll() is not None:
                    raise RuntimeError("the daemon with metrics never served /metrics") from None
                time.sleep(0.2)
        prom_port = None
        py_scraper = None
        if scraper == "prometheus":
            prom, prom_port = start_prometheus(tmp / "prometheus", f"127.0.0.1:{port}")
            procs.append(prom)
        else:
            py_scraper = PythonScraper(url)
        time.sleep(5)  # warm-up: imports, connections, first ticks, first scrapes
        start = {p.pid: _proc_sample(p.pid)[0] for p in (with_metrics, without)}
        rss_max = {p.pid: 0.0 for p in (with_metrics, without)}
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            for p in (with_metrics, without):
                rss_max[p.pid] = max(rss_max[p.pid], _proc_sample(p.pid)[1])
        elapsed = time.monotonic() - t0
        out: dict[str, Any] = {"services": services, "interval_s": interval, "window_s": round(elapsed, 1),
                               "scraper": scraper, "metrics_bytes": size}
        for name, p in (("with_metrics", with_metrics), ("without_metrics", without)):
            cpu, rss = _proc_sample(p.pid)
            out[name] = {"cpu_percent": round(100 * (cpu - start[p.pid]) / elapsed, 2), "rss_mib": round(rss, 1),
                         "rss_max_mib": round(rss_max[p.pid], 1)}
        if prom_port is not None:
            out["scrapes"] = prom_query(prom_port, f"count_over_time(up{{job='docktor'}}[{int(elapsed)}s])")
            out["scrapes_failed"] = prom_query(prom_port, f"count_over_time((up{{job='docktor'}} == 0)[{int(elapsed)}s:1s])") or 0
            d = prom_query(prom_port, f"avg_over_time(scrape_duration_seconds{{job='docktor'}}[{int(elapsed)}s])")
            out["scrape_ms_avg"] = None if d is None else round(d * 1000, 2)
            d = prom_query(prom_port, f"max_over_time(scrape_duration_seconds{{job='docktor'}}[{int(elapsed)}s])")
            out["scrape_ms_max"] = None if d is None else round(d * 1000, 2)
        elif py_scraper is not None:
            py_scraper.stop.set()
            ds = py_scraper.durations
            out["scrapes"] = len(ds)
            out["scrape_ms_avg"] = round(1000 * sum(ds) / len(ds), 2) if ds else None
            out["scrape_ms_max"] = round(1000 * max(ds), 2) if ds else None
        for name in ("with_metrics", "without_metrics"):
            state = tmp / name.split("_")[0] / "state" / "decisions.jsonl"
            out[name]["decisions_logged"] = sum(1 for _ in state.open()) if state.exists() else 0
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_footprint", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling window")
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--scraper", choices=["prometheus", "python"],
                        default="prometheus" if shutil.which("prometheus") or Path("/usr/bin/prometheus").exists() else "python")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = run(services=args.services, seconds=args.seconds, scraper=args.scraper)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['services']} services @ {r['interval_s']:g} s, both daemons side by side for {r['window_s']:g} s; "
          f"/metrics scraped every 1 s by {r['scraper']} ({r['metrics_bytes']:,} bytes per scrape)")
    for name in ("with_metrics", "without_metrics"):
        d = r[name]
        print(f"  {name.replace('_', ' '):<16} CPU {d['cpu_percent']:>5}% of one core, RSS {d['rss_mib']} MiB "
              f"(max {d['rss_max_mib']} MiB), {d['decisions_logged']} log lines")
    print(f"  scrapes: {r.get('scrapes')} ({r.get('scrapes_failed', 0)} failed), duration avg {r.get('scrape_ms_avg')} ms, "
          f"max {r.get('scrape_ms_max')} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
