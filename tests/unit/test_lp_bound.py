"""The start-up-aware LP lower bound (agent/sim/lp_bound.py) and its ``× bound`` column in ``docktor bench``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from docktor.agent.sim.baselines import oracle_replica_seconds, run_policy
from docktor.agent.sim.bench import NEEDS_SCIPY, NONE_IN_TIME, cells
from docktor.agent.sim.lp_bound import NoScheduleInTime, available, lp_bound
from docktor.agent.sim.simulator import Scenario, workload
from docktor.agent.sim.trace_file import Trace

needs_scipy = pytest.mark.skipif(not available(), reason="the LP bound needs scipy (the bench extra; requirements.lock has it)")


@needs_scipy
def test_one_second_of_work_costs_its_start_up_as_well() -> None:
    # 50 messages of exactly 20 ms arrive in second 0: 1 replica-second of work. slo 3.5 s: due by
    # the end of second ceil(1 + 3.5 + 0.02) - 1 = 4, so 5 seconds [0, 5) to do it in. No replica
    # runs before (min 0) and one started at 0 serves from second 2 (start-up 2 s): c replicas
    # paid over the 5 seconds do c x 3 of work, so c = 1/3 and the bound is 5/3 replica-seconds.
    # The oracle, which bills no start-up, says 1 (c x 5 = 1 over 5 seconds, paid as work).
    scenario = Scenario(cv=0.0, startup_s=2.0, slo_s=3.5, min_replicas=0)
    trace = Trace("tiny", np.array([50, 0, 0, 0, 0, 0]))
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load) == pytest.approx(5 / 3, abs=1e-6)
    assert oracle_replica_seconds(trace, scenario, load) == pytest.approx(1.0, abs=1e-6)


@needs_scipy
def test_without_start_up_it_is_the_oracle() -> None:
    # the same relaxation of arrivals and deadlines, nothing to pay before serving: the fluid
    # optimum both compute (earliest deadline first is optimal there)
    scenario = Scenario(cv=0.0, startup_s=0.0, slo_s=3.5, min_replicas=1)
    trace = Trace("steps", np.array([50, 200, 0, 0, 400, 0, 0, 0, 0, 0]))
    load = workload(trace, scenario)
    assert lp_bound(trace, scenario, load) == pytest.approx(oracle_replica_seconds(trace, scenario, load), abs=1e-6)


@needs_scipy
def test_it_lies_between_the_oracle_and_a_real_run() -> None:
    scenario = Scenario(startup_s=10.0, slo_s=15.0)
    trace = Trace("bursts", np.array([20 if (t % 60) >= 8 else 400 for t in range(300)]))
    load = workload(trace, scenario)
    bound = lp_bound(trace, scenario, load)
    assert bound is not None
    oracle = oracle_replica_seconds(trace, scenario, load)
    assert oracle < bound  # each burst needs replicas started for it, and they are paid while starting
    assert bound <= run_policy("docktor", trace, scenario, load).replica_seconds


@needs_scipy
def test_bench_shows_each_run_against_the_bound(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "spike.csv").write_text("t,rate\n" + "".join(f"{t},{300 if 20 <= t < 30 else 20}\n" for t in range(120)))
    run = [sys.executable, "-m", "docktor.agent.cli.app", "bench", "--traces", str(traces), "--policies", "docktor,oracle"]
    done = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    for row in rows:
        assert row["cost_vs_bound"] == pytest.approx(row["replica_seconds"] / row["bound_replica_seconds"], rel=2e-3)
    assert rows[1]["policy"] == "oracle" and rows[1]["cost_vs_bound"] <= 1.0
    table = subprocess.run([*run, "--markdown"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "| × bound |" in table and "× bound: the start-up-aware LP bound, solved in" in table


def test_bench_without_scipy_says_so_in_the_column(tmp_path: Path) -> None:
    # scipy is the optional bench extra: hidden from the interpreter (None in sys.modules is how
    # Python hides a module), the column says what it needs instead of failing the run
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "flat.csv").write_text("t,rate\n" + "".join(f"{t},40\n" for t in range(60)))
    hide = "import sys; sys.modules['scipy'] = None; from docktor.agent.cli.app import main; main()"
    done = subprocess.run([sys.executable, "-c", hide, "bench", "--traces", str(traces), "--policies", "static", "--markdown"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| flat"))
    assert NEEDS_SCIPY in row
    assert "× bound: the start-up-aware LP bound needs scipy: pip install 'docktor[bench]'" in done.stdout


@needs_scipy
def test_where_no_schedule_is_in_time_there_is_no_bound_and_bench_says_so(tmp_path: Path) -> None:
    # 300/s from second 0, a 60 s start-up, a 30 s SLO, 1 replica at 50/s: whatever is ordered
    # at 0 serves from 60, after the first seconds' messages were due, so no schedule at all
    # starts every message in time. bench used to stop there ("did not solve: infeasible").
    scenario = Scenario(startup_s=60.0)
    trace = Trace("rush", np.full(120, 300))
    with pytest.raises(NoScheduleInTime, match="no schedule starts every message of rush in time"):
        lp_bound(trace, scenario, workload(trace, scenario))
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "rush.csv").write_text("t,rate\n" + "".join(f"{t},300\n" for t in range(120)))
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli.app", "bench", "--traces", str(traces),
                           "--policies", "docktor", "--startup-s", "60", "--markdown"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| rush"))
    assert NONE_IN_TIME in row


def test_simulate_and_rows_without_a_bound_have_no_such_column() -> None:
    header, _, _ = cells([{"trace": "t", "policy": "static", "replica_seconds": 1.0}])
    assert "× bound" not in header
