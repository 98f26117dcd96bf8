"""`make demo` end to end: a real nats-server, real replicas, the real daemon loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from docktor.agent.runtime.log_reader import read_records
from tests.support.examples import honoured_sigterm, removed_replicas


def test_demo_scales_up_under_a_burst_and_back_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = subprocess.run(
        [sys.executable, "-m", "docktor.agent.cli", "demo", "--duration", "65", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    # the first run, from a clean state dir: no traceback anywhere, even while nats-server starts
    assert "Traceback" not in r.stdout + r.stderr and "Error" not in r.stderr, r.stderr
    recs = list(read_records(state / "decisions.jsonl"))  # intent and outcome lines merged
    # piped, the demo prints a plain line per action and a summary that ends with the final count
    (summary,) = [line for line in r.stdout.splitlines() if line.startswith("Summary:")]
    final = recs[-1]["target_replicas"] if recs[-1]["executed"] else recs[-1]["current_replicas"]
    assert f"ended at {final} replica(s)" in summary
    assert sum(1 for line in r.stdout.splitlines() if " scale_up " in line) == sum(
        1 for x in recs if x["decision"] == "scale_up" and x["executed"]
    )
    ups = [x for x in recs if x["decision"] == "scale_up" and x["executed"]]
    downs = [x for x in recs if x["decision"] == "scale_down" and x["executed"]]
    assert all(x["outcome"]["status"] == "ok" for x in ups + downs)
    # the burst (500 msg/s for 10 s from t=25 s: 5,000 messages, each to start within the 10 s
    # target_wait, at ~59/s per replica) drives the consumer well past the base load's 2 ...
    assert max(x["target_replicas"] for x in ups) >= 5
    assert all(x["source"] == "policy" for x in ups)
    assert any("queue.rate_in" in rule for x in ups for rule in x["matched_rules"])  # the Go rules, as guardrails
    # ... and once it has drained, the consumer is scaled back down, to the base load by the end
    assert downs and downs[0]["ts"] > max(x["ts"] for x in ups if x["target_replicas"] >= 5)
    assert all(x["observations"]["queue.backlog"] <= 100 for x in downs)  # scale_down_when holds
    assert final <= 3, summary
    # each replica scaled in finished what it held and exited on SIGTERM, inside its 3 s grace
    removed = removed_replicas(recs)
    assert removed and all(honoured_sigterm(x["stopped"]) for x in removed), removed


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: nats-server used to die with
    the demo and leave its clients printing nats-py tracebacks while they reconnected."""
    import signal

    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "docktor.agent.cli", "demo", "--duration", "120", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,  # a group of its own, as a shell's job: the SIGINT below is Ctrl-C's
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the first action shows the demo is running
        lines.append(line)
        if " scale_up " in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=60) == 0, out
    assert "Traceback" not in out and "encountered error" not in out, out
    assert any(line.startswith("Summary:") for line in out.splitlines()), out
    assert all(r.get("executed") is not None for r in read_records(state / "decisions.jsonl"))
