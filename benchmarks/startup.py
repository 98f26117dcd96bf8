"""How long ``docktor --help`` and ``docktor validate`` take, side by side with an older revision.

    python -m benchmarks.startup [--runs 15] [--baseline 8a7d357]

The baseline is the code of another git revision (by default the last one before the plugin SDK
and layout change, where every command imported openai, numpy and matplotlib at start), extracted
with ``git archive`` into a temporary folder and run with the same interpreter and packages. The
two are run in turn (A B A B ...), so both see the same machine load; the figures are medians of
whole-process wall times.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the last commit before the layout change (issue 8)
BASELINE = "8a7d357"

CONFIG = """
services:
  - name: worker
    executor: local
    command: ["python", "worker.py"]
    policy: rules
    queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}
    rules:
      scale_up_when: [{metric: queue.backlog, op: ">", value: 500}]
      scale_down_when: [{metric: queue.backlog, op: "<=", value: 100}]
"""


def extract(revision: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "agent", "tools"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def wall(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-300:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE})")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="docktor-startup-") as tmp:
        old = Path(tmp) / "old"
        extract(args.baseline, old)
        cfg = Path(tmp) / "docktor.yaml"
        cfg.write_text(CONFIG)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(old)}
        cases = {
            "--help": (["-m", "docktor.agent.cli", "--help"], ["-m", "agent.cli", "--help"]),
            "validate": (["-m", "docktor.agent.cli", "validate", "-c", str(cfg)], ["-m", "agent.cli", "validate", "-c", str(cfg)]),
        }
        print(f"median wall time of {args.runs} runs each, interleaved; python {sys.version.split()[0]}")
        for name, (new_args, old_args) in cases.items():
            new_t, old_t = [], []
            wall([sys.executable, *new_args], Path(tmp))  # warm the file cache for both
            wall([sys.executable, *old_args], old, env)
            for _ in range(args.runs):
                new_t.append(wall([sys.executable, *new_args], Path(tmp)))
                old_t.append(wall([sys.executable, *old_args], old, env))
            n, o = statistics.median(new_t), statistics.median(old_t)
            print(f"docktor {name:<9} now {n * 1000:6.0f} ms   {args.baseline} {o * 1000:6.0f} ms   ({o / n:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
