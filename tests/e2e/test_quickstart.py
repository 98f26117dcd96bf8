"""examples/quickstart/README.md followed literally: real nats-server, real daemon, real workers.

The example folder is copied to a temporary one (the daemon keeps its state beside the config),
and NATS runs on a free port told through NATS_URL, as the README says to do when 4222 is taken.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docktor.agent.demo.nats_server import find_nats_server, free_port
from tests.support.examples import honoured_sigterm, logged_decisions, removed_replicas, replica_stop_lines, run_ok
from tests.support.peers import REPO

pytestmark = pytest.mark.timeout(240)




def test_quickstart_scales_the_worker_up_under_load_and_back_to_one(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", folder)
    port = free_port()
    # `. .venv/bin/activate`: the venv's bin first on PATH (python, docktor, nats-server)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "NATS_URL": f"nats://127.0.0.1:{port}"}
    nats = subprocess.Popen([find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run_ok(["docktor", "validate", "--config", "docktor.yaml"], folder, env)
        run_ok(["docktor", "daemon", "start", "--config", "docktor.yaml"], folder, env)
        try:
            published = run_ok(["python", "publish.py", "--rate", "300", "--seconds", "20"], folder, env, timeout=90)
            assert published.stdout.startswith("published ")
            # once the load is gone: the backlog drains and the worker goes back to one replica
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                recs = logged_decisions(folder)
                last = recs[-1] if recs else {}
                if last.get("current_replicas") == 1 and last.get("observations", {}).get("queue.backlog") == 0:
                    break
                time.sleep(1)
            recs = logged_decisions(folder)
        finally:
            stop = run_ok(["docktor", "daemon", "stop", "--config", "docktor.yaml"], folder, env)
            assert stop.stdout.startswith("stopped docktor")
        ups = [r for r in recs if r["decision"] == "scale_up" and r["executed"]]
        downs = [r for r in recs if r["decision"] == "scale_down" and r["executed"]]
        assert max(int(r["target_replicas"]) for r in ups) >= 4, ups
        assert downs and int(downs[-1]["target_replicas"]) == 1
        assert recs[-1]["current_replicas"] == 1 and recs[-1]["observations"]["queue.backlog"] == 0
        assert all(r["outcome"]["status"] == "ok" for r in ups + downs)
        # the README: on scale-in the workers finish and ack what they hold, then exit; every
        # replica removed did so on SIGTERM, none waited out the grace period for a SIGKILL
        removed = removed_replicas(recs)
        assert removed and all(honoured_sigterm(x["stopped"]) for x in removed), removed
        assert not any("SIGKILL" in r["outcome"]["message"] for r in downs), [r["outcome"]["message"] for r in downs]
        # ... and so did the replicas `daemon stop` stopped (its own lines in each replica's log)
        stops = replica_stop_lines(folder / ".docktor", "worker")
        assert stops and all(lines and lines[-1].endswith(": stopped (exited with code 0)") for lines in stops.values()), stops
        assert not any("SIGKILL" in line for lines in stops.values() for line in lines), stops
        # no worker is left behind by `daemon stop`
        left = subprocess.run(["pgrep", "-f", f"{folder}.*worker.py|worker.py"], capture_output=True, text=True, check=False)
        assert not [p for p in left.stdout.split() if Path(f"/proc/{p}/cwd").resolve() == folder.resolve()]
    finally:
        nats.terminate()
        nats.wait(10)
