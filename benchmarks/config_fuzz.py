"""Hostile and broken docktor.yaml: outcomes and times, now and at an older revision, side by side.

    python -m benchmarks.config_fuzz [--cases 1000] [--seed 12] [--baseline 35abe63] [--limit 10]

Runs the named attacks of ``tests/support/hostile_yaml.py`` and ``--cases`` seeded random mutations of a
valid config through ``load_config`` — what ``docktor validate`` and ``daemon start`` run — in a
worker process per revision (the baseline extracted with ``git archive``, run with the same
interpreter and packages). Each case is classified as the CLI would end: ``exit 0`` (loaded),
``exit 2`` (usage error, one line per problem), ``exit 1`` (any other exception: a crash), or
``hang`` (still running after ``--limit`` seconds, or past the worker's 2 GiB memory limit).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

from tests.support.hostile_yaml import NAMED, VALID, mutate, random_ops

REPO = Path(__file__).resolve().parents[1]
#: main before issue 12 (write-ahead log, bounded YAML, secrets)
BASELINE = "35abe63"

WORKER = r"""
import json, resource, signal, sys, time
old_root = sys.argv[1]
if old_root:
    # the baseline's code instead of the installed (editable) docktor
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ and "editable" not in getattr(f, "__name__", "")]
    for name in [m for m in sys.modules if m == "docktor" or m.startswith("docktor.")]:
        del sys.modules[name]
    sys.path.insert(0, old_root)
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from docktor.agent.config.load import load_config
from docktor.agent.problems import UsageError
import docktor.agent.config.load as loaded
limit = float(sys.argv[3])

class Hang(BaseException):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
for path in open(sys.argv[2]).read().split("\0"):
    if not path:
        continue
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        load_config(path)
        out, detail = "exit 0", ""
    except UsageError as e:
        lines = [str(p) for p in e.problems]
        out = "exit 2" if all("\n" not in l for l in lines) else "exit 2 (multi-line)"
        detail = lines[0][:100] if lines else ""
    except Hang:
        out, detail = "hang", f"still running after {limit:g} s"
    except MemoryError:
        out, detail = "hang", "past 2 GiB of memory"
    except BaseException as e:
        out, detail = "exit 1", type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"out": out, "detail": detail, "s": time.perf_counter() - t0, "from": loaded.__file__}), flush=True)
"""


def extract(revision: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "agent", "tools"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into / "docktor", filter="data")


def run(paths: list[Path], root: str, limit: float, tmp: Path) -> list[dict[str, object]]:
    listing = tmp / f"cases-{'old' if root else 'new'}"
    listing.write_text("\0".join(str(p) for p in paths))
    done = subprocess.run([sys.executable, "-c", WORKER, root, str(listing), str(limit)], capture_output=True, text=True, check=False)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    if len(results) != len(paths):
        raise SystemExit(f"worker ended early ({done.returncode}): {done.stderr[-500:]}")
    return results


def summary(results: list[dict[str, object]]) -> str:
    counts = Counter(str(r["out"]) + (f" ({r['detail']})" if r["out"] in ("exit 1", "hang") else "") for r in results)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.config_fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000, help="random mutations (default 1000)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE}); '' for none")
    ap.add_argument("--limit", type=float, default=10.0, help="seconds before a case counts as a hang (default 10)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="docktor-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        named = []
        for i, (_, text) in enumerate(NAMED):
            named.append(tmp / f"named-{i}.yaml")
            named[-1].write_bytes(text.encode("utf-8", errors="surrogateescape"))
        mutated = []
        for i in range(args.cases):
            mutated.append(tmp / f"mutation-{i}.yaml")
            text = mutate(VALID, random_ops(rng, rng.randint(1, 6)))
            mutated[-1].write_bytes(text.encode("utf-8", errors="surrogateescape"))
        now = run(named + mutated, "", args.limit, tmp)
        old: list[dict[str, object]] | None = None
        if args.baseline:
            extract(args.baseline, tmp / "old")
            old = run(named + mutated, str(tmp / "old"), args.limit, tmp)
            assert str(old[0]["from"]).startswith(str(tmp / "old")), old[0]["from"]
        print(f"python {sys.version.split()[0]}; hang = still running after {args.limit:g} s or past 2 GiB")
        print(f"\nnamed cases ({len(NAMED)}):")
        width = max(len(n) for n, _ in NAMED)
        for i, (name, _) in enumerate(NAMED):
            r = now[i]
            before = "" if old is None else (
                f"   {args.baseline}: {old[i]['out']} in {float(old[i]['s']) * 1000:.1f} ms"
                + (f" ({old[i]['detail']})" if old[i]["out"] != "exit 2" else "")
            )
            print(f"  {name:<{width}}  now: {r['out']} in {float(r['s']) * 1000:7.1f} ms{before}")
        times = [float(r["s"]) for r in now[len(NAMED):]]
        print(f"\n{args.cases} random mutations of a valid config (seed {args.seed}):")
        print(f"  now:          {summary(now[len(NAMED):])}")
        print(f"                median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms per case")
        if old is not None:
            old_times = [float(r["s"]) for r in old[len(NAMED):]]
            print(f"  {args.baseline}:      {summary(old[len(NAMED):])}")
            print(f"                median {statistics.median(old_times) * 1000:.1f} ms, max {max(old_times) * 1000:.1f} ms per case")
        crashes = [r for r in now if r["out"] not in ("exit 0", "exit 2")]
        return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
