"""``docktor bench --from-log`` on a log the daemon wrote: real nats-server, real daemon (local
executor), real worker processes, a burst from the quick start's publisher.

The replay of the config that ran must agree with what the daemon did: replica-seconds within
10 % (docs/benchmarks.md states the tolerance and what the replay models to reach it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docktor.agent.demo.nats_server import find_nats_server, free_port
from tests.support.examples import logged_decisions, run_ok
from tests.support.peers import REPO
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

#: the stated tolerance: replayed replica-seconds of the config that ran vs the daemon's own
TOLERANCE = 0.10




def settled(folder: Path) -> bool:
    """The worker is up and the source measures rates: the load can start on a ready replica."""
    recs = logged_decisions(folder)
    return bool(recs) and "queue.rate_in" in recs[-1].get("observations", {}) and recs[-1].get("current_replicas") == 1


def decisions_text(folder: Path) -> str:
    """The daemon's decisions, one line each: what a failed comparison is read against."""
    return "\n".join(
        f"{r['ts']} {r['current_replicas']}->{r['target_replicas']} executed={r['executed']} "
        f"{(r.get('outcome') or {}).get('duration_ms')} {json.dumps(r['observations'], sort_keys=True)} {r['reason'][:120]}"
        for r in logged_decisions(folder))


def back_to_one(folder: Path) -> bool:
    recs = logged_decisions(folder)
    last = recs[-1] if recs else {}
    return last.get("current_replicas") == 1 and last.get("observations", {}).get("queue.backlog") == 0 and any(
        r["decision"] == "scale_down" and r["executed"] for r in recs)


def test_the_replay_of_the_config_that_ran_agrees_with_what_the_daemon_did(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", folder)
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "NATS_URL": f"nats://127.0.0.1:{port}", "COLUMNS": "200"}
    nats = subprocess.Popen([find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_ok(["docktor", "daemon", "start", "--config", "docktor.yaml"], folder, env)
        try:
            wait_until("the worker up and the source's rates measured", lambda: settled(folder), 60)
            published = run_ok(["python", "publish.py", "--rate", "300", "--seconds", "15"], folder, env, timeout=90)
            sent = int(published.stdout.split()[1])
            wait_until("the backlog drained and the worker back to one replica", lambda: back_to_one(folder), 120)
        finally:
            run_ok(["docktor", "daemon", "stop", "--config", "docktor.yaml"], folder, env)
        ups = [r for r in logged_decisions(folder) if r["decision"] == "scale_up" and r["executed"]]
        assert max(int(r["target_replicas"]) for r in ups) >= 3, ups  # the burst was felt

        done = run_ok(["docktor", "bench", "--from-log", ".docktor/decisions.jsonl", "--config", "docktor.yaml", "--json"],
                   folder, env)
        lines = [json.loads(x) for x in done.stdout.splitlines()]
        rows = {r["policy"]: r for r in lines if "policy" in r}
        rebuilt = next(x["rebuilt"] for x in lines if "rebuilt" in x)
        replayed, logged = rows["your config"]["replica_seconds"], rows["your config, as logged"]["replica_seconds"]
        print("\n".join(rebuilt["how"] + rebuilt["summary"]))  # shown with -s, and kept in the report on a failure
        assert abs(replayed - logged) <= TOLERANCE * logged, f"{replayed} vs {logged}: {rebuilt}\n{decisions_text(folder)}"
        # every message published was rebuilt from queue.rate_in (the load began after the first reading), within
        # what the source's read times vs the records' times allow (a few ms of each 2 s interval: ~0.2 %)
        assert abs(rows["your config"]["messages"] - sent) <= 0.01 * sent, (rows["your config"]["messages"], sent)
        assert {"docktor", "target", "rules", "hpa-tuned", "oracle"} <= set(rows)
        assert rebuilt["service"] == "worker" and rebuilt["cannot_know"] and rebuilt["best"] in rows

        table = run_ok(["docktor", "bench", "--from-log", ".docktor/decisions.jsonl", "--config", "docktor.yaml"], folder, env)
        for said in ("rebuilt from the log:", "what it cannot know:", "your config, as logged", "best row:"):
            assert said in table.stdout, table.stdout
        # the burst scaled the service up and back: the replay of the config that ran did too
        assert rows["your config"]["actions"] >= 2
    finally:
        nats.terminate()
        nats.wait(10)
