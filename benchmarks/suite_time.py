"""How long the test suite takes: a fresh clone of a revision, its ``make test`` timed from outside.

    python -m benchmarks.suite_time --rev HEAD --fresh      # as on a new machine: no peers at all
    python -m benchmarks.suite_time --rev HEAD              # with this machine's peers (as CI has them)

``--fresh`` is what the README's Quick start promises a new machine: no ``../shared`` beside the
clone, no Docker engine or CLI, no Debian ``rabbitmq-server``/``redis-server``/``prometheus``. On
a machine that has them, they are hidden in a private mount namespace (overlay whiteouts over
``/usr/bin``, ``/usr/sbin``, ``/usr/local/bin``; root only), so their tests skip as they would there.
The clone builds its own venv (``make test`` does), and that time is counted too. Run one revision
after the other, not side by side: the suite is itself parallel and would measure the other run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HIDDEN = {  # folder -> programs a new machine does not have
    "/usr/bin": ("redis-server", "redis-cli", "prometheus", "docker"),
    "/usr/sbin": ("rabbitmq-server",),
    "/usr/local/bin": ("docker",),
}
REQUIRE = ("DOCKTOR_REQUIRE_DOCKER", "DOCKTOR_REQUIRE_SERVERS", "DOCKTOR_REQUIRE_LLM", "DOCKER_HOST", "DOCKER_CONFIG")

# Run inside `unshare -m`: whiteouts (0/0 character devices) in an overlay's upper folder hide the lower files.
HIDE_AND_RUN = r"""
set -e
top=$1; shift
i=0
for pair in "$@"; do
  folder=${pair%%=*}; names=${pair#*=}; i=$((i+1))
  mkdir -p "$top/up$i" "$top/work$i"
  for name in ${names//,/ }; do mknod "$top/up$i/$name" c 0 0; done
  mount -t overlay overlay -o "lowerdir=$folder,upperdir=$top/up$i,workdir=$top/work$i" "$folder"
done
for name in redis-server prometheus rabbitmq-server docker; do
  if command -v "$name" >/dev/null; then echo "$name is still visible" >&2; exit 9; fi
done
exec make test
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the revision to clone (default HEAD)")
    parser.add_argument("--fresh", action="store_true", help="hide Docker and the Debian servers, as on a new machine")
    parser.add_argument("--workers", help="TEST_WORKERS for make test (default: the Makefile's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="docktor-suite-") as tmp:
        clone = Path(tmp) / "docktor"  # nothing named shared beside it: ../shared is absent
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", args.rev], check=True)
        env = {k: v for k, v in os.environ.items() if not (args.fresh and k in REQUIRE)}
        if args.workers is not None:
            env["TEST_WORKERS"] = args.workers
        if args.fresh:
            pairs = [f"{folder}={','.join(names)}" for folder, names in HIDDEN.items()]
            command = ["unshare", "-m", "bash", "-c", HIDE_AND_RUN, "hide", str(Path(tmp) / "overlay"), *pairs]
        else:
            command = ["make", "test"]
        started = time.monotonic()
        done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
        took = time.monotonic() - started
    summary = [line for line in done.stdout.splitlines() if re.search(r"\b(passed|failed)\b.* in [\d.]+s", line)]
    print(f"rev {args.rev}{' (fresh machine)' if args.fresh else ''}: make test exit {done.returncode} "
          f"after {took:.0f} s ({took // 60:.0f} min {took % 60:02.0f} s), venv included")
    print(summary[-1].strip("= ") if summary else done.stdout[-2000:] + done.stderr[-2000:])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
