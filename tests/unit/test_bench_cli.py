"""``docktor simulate`` / ``docktor bench`` through a Typer app built the way agent/cli.py registers them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from docktor.agent.cli.sim import register
from tests.support.cli import on_a_terminal

REQUIRED_FIELDS = {
    "trace", "policy", "messages", "slo_attainment", "p50_wait_s", "p99_wait_s", "max_backlog",
    "replica_seconds", "work_seconds", "oracle_replica_seconds", "cost_ratio", "actions", "reversals",
}


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


runner = CliRunner()


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    d = tmp_path / "traces"
    d.mkdir()
    (d / "spike.csv").write_text("# a spike\nt,rate\n" + "".join(f"{t},{300 if 20 <= t < 30 else 20}\n" for t in range(120)))
    (d / "flat.csv").write_text("t,rate\n" + "".join(f"{t},40\n" for t in range(90)))
    return d


def test_bench_json_has_every_field(traces: Path) -> None:
    r = runner.invoke(app(), ["bench", "--traces", str(traces), "--policies", "docktor,hpa,static,oracle", "--json", "--max", "20"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {(x["trace"], x["policy"]) for x in rows} == {
        (t, p) for t in ("flat", "spike") for p in ("docktor", "hpa", "static", "oracle")
    }
    for row in rows:
        assert row.keys() >= REQUIRED_FIELDS
        assert 0.0 <= row["slo_attainment"] <= 1.0
        assert row["messages"] == (90 * 40 if row["trace"] == "flat" else 110 * 20 + 10 * 300)
        assert row["work_seconds"] == pytest.approx(row["messages"] * 0.02, abs=0.1)
        assert row["cost_ratio"] == pytest.approx(row["replica_seconds"] / row["oracle_replica_seconds"], rel=2e-3)
        if row["policy"] != "oracle":
            assert row["p50_wait_s"] <= row["p99_wait_s"]
            assert row["actions"] >= row["reversals"] >= 0


def test_bench_markdown_table_and_plots(traces: Path, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    r = runner.invoke(app(), ["bench", "--traces", str(traces), "--policies", "docktor,rules", "--plot", str(plots), "--markdown"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| trace ") and "| SLO met |" in lines[0]
    assert lines[1].startswith("|---") and lines[1].endswith(":|")  # numbers right-aligned
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [row.split("|")[1:3] for row in rows] == [
        [" flat  ", " docktor "], [" flat  ", " rules   "], [" spike ", " docktor "], [" spike ", " rules   "],
    ]
    assert "2 traces x 2 policies simulated in" in r.stdout
    for name in ("spike", "flat"):
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_one_line_before_any_simulation(traces: Path, tmp_path: Path) -> None:
    # matplotlib is the optional `plots` extra (the daemon and its image do without): an install
    # lacking it is told how to get it, at once; None in sys.modules is how Python hides a module
    hide = "import sys; sys.modules['matplotlib'] = None; from docktor.agent.cli.app import main; main()"
    done = subprocess.run([sys.executable, "-c", hide, "bench", "--traces", str(traces), "--plot", str(tmp_path / "plots")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.strip() == "error: --plot: needs matplotlib, which this install lacks: pip install 'docktor[plots]'"
    assert not (tmp_path / "plots").exists()


def test_simulate_one_policy_with_the_adversarial_advisor(traces: Path, tmp_path: Path) -> None:
    timeline = tmp_path / "timeline.csv"
    r = runner.invoke(
        app(),
        ["simulate", str(traces / "spike.csv"), "--policy", "docktor", "--advisor", "adversarial", "--json",
         "--max", "8", "--timeline", str(timeline)],
    )
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert row["policy"] == "docktor" and row["advisor"] == "adversarial"
    # whatever the adversary asks for, the guardrails keep every count inside [min, max]
    lines = timeline.read_text().splitlines()[1:]
    assert lines and all(1 <= int(line.split(",")[1]) <= 8 for line in lines)


@pytest.mark.parametrize(
    "args, names",
    [
        (["bench", "--traces", "/nonexistent/dir"], "--traces: /nonexistent/dir: no such file or directory"),
        (["bench", "--policies", "docktor,magic"], "--policies"),
        (["bench", "--advisor", "psychic"], "--advisor"),
        (["bench", "--max", "0"], "--max"),
        (["bench", "--slo-s", "0"], "--slo-s"),
        (["simulate", "no-such-trace"], "TRACE"),
        (["simulate", "step", "--policy", "docktor,hpa"], "--policy"),
        (["simulate", "step", "--policy", "nope"], "--policy:"),
        (["bench", "--grid", "--grid-slo", "fast"], "--grid-slo"),
        (["bench", "--grid", "--grid-cv", "-1"], "--grid-cv"),
        (["bench", "--grid", "--jobs", "0"], "--jobs"),
        (["bench", "--grid", "--versus", "magic"], "--versus"),
        (["bench", "--held-out", "seven"], "--held-out"),
        (["bench", "--no-public"], "--no-public"),
        (["bench", "--peer-period-s", "0"], "--peer-period-s"),
        (["bench", "--drift", "0"], "--drift"),
        (["simulate", "ramp", "--cap-rate", "-1"], "--cap-rate"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], names: str) -> None:
    r = runner.invoke(app(), args)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0]
    assert "Traceback" not in r.output


def test_malformed_csv_names_file_and_line(traces: Path) -> None:
    (traces / "broken.csv").write_text("t,rate\n0,5\n1,lots\n")
    r = runner.invoke(app(), ["bench", "--traces", str(traces), "--policies", "static"])
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: {traces / 'broken.csv'}:3: not numbers: '1,lots'"


def test_llm_without_endpoint_is_a_usage_error(traces: Path) -> None:
    r = runner.invoke(app(), ["bench", "--traces", str(traces), "--policies", "docktor", "--advisor", "llm"])
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error: --advisor: llm needs --llm-config")


@pytest.mark.llm
def test_simulate_with_the_real_llm_advisor(tmp_path: Path) -> None:
    """The production advisor against the llama.cpp peer, inside the simulator's loop."""
    from tests.support.peers import start_llama

    server, base_url = start_llama("")
    try:
        cfg = tmp_path / "docktor.yaml"
        cfg.write_text(
            "llm:\n  provider: openai-compatible\n  base_url: " + base_url + "\n  model: ai/llama3.2\n"
            "  timeout: 20\n  max_tool_rounds: 0\nservices:\n  - name: x\n    command: ['true']\n    policy: rules\n"
        )
        trace = tmp_path / "short.csv"
        trace.write_text("t,rate\n" + "".join(f"{t},{200 if 10 <= t < 20 else 30}\n" for t in range(40)))
        r = runner.invoke(
            app(), ["simulate", str(trace), "--advisor", "llm", "--llm-config", str(cfg), "--json", "--max", "6"]
        )
    finally:
        del server
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["advisor"] == "llm" and row["messages"] == 10 * 200 + 30 * 30
    # whatever the model said, the count stayed inside the bounds the guardrails enforce
    assert 0 < row["replica_seconds"] <= 6 * 40


def test_hpa_tuned_reports_the_target_it_chose(traces: Path) -> None:
    r = runner.invoke(app(), ["bench", "--traces", str(traces), "--policies", "hpa-tuned", "--json", "--max", "20"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and all(row["target_per_replica"] > 0 for row in rows)
    table = runner.invoke(app(), ["bench", "--traces", str(traces), "--policies", "hpa-tuned", "--max", "20"])
    assert "hpa-tuned (" in table.stdout and "/replica)" in table.stdout


def test_held_out_traces_are_generated_in_memory() -> None:
    r = runner.invoke(app(), ["bench", "--held-out", "7", "--no-public", "--policies", "static", "--json"])
    assert r.exit_code == 0, r.output
    names = [json.loads(line)["trace"] for line in r.stdout.splitlines()]
    assert names == [f"{shape}@7" for shape in (
        "spikes", "sawtooth", "random-walk", "flash-crowd", "bursts-a", "bursts-b", "noisy-diurnal", "on-off",
    )]


def test_grid_reports_the_worst_case_and_the_cells_below_the_peers(traces: Path) -> None:
    args = [
        "bench", "--traces", str(traces), "--grid", "--grid-startup", "2", "--grid-slo", "15", "--grid-cv", "0",
        "--grid-interval", "10", "--policies", "docktor,keda,oracle", "--versus", "keda", "--max", "20",
    ]
    r = runner.invoke(app(), args)
    assert r.exit_code == 0, r.output
    # the base scenario plus one cell per axis value: 5 scenarios, 2 traces
    assert "5 scenarios x 2 traces = 10 cells" in r.stdout
    assert "| docktor | 10 |" in r.stdout and "| keda | 10 |" in r.stdout
    assert "cells where docktor's SLO attainment is below keda:" in r.stdout
    # and for each cell keda won on attainment, the spare replicas that would have won it
    assert "cells where docktor's SLO attainment is below a peer's (keda):" in r.stdout
    rows = [json.loads(line) for line in runner.invoke(app(), [*args, "--json"]).stdout.splitlines()]
    cells = {(row["trace"], row["startup_s"], row["slo_s"], row["cv"], row["interval_s"], row["peer_period_s"]) for row in rows}
    assert len(cells) == 10
    # along the interval axis every controller shares the period; elsewhere the peers keep theirs
    assert {row["peer_period_s"] for row in rows if row["interval_s"] == 10} == {10}
    assert {row["peer_period_s"] for row in rows if row["interval_s"] == 5} == {None}


# ------------------------------------------------------------------ how the table looks, through the real CLI

#: what would make rich treat a pipe as a terminal, or a terminal as plain
TERMINAL_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "COLUMNS")


def real_cli(*args: str, terminal: bool, columns: int = 200) -> str:
    """``docktor ARGS`` with its stdout a pipe, or the slave side of a pseudo-terminal."""
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_OVERRIDES}
    env.update(TERM="xterm-256color", COLUMNS=str(columns))
    cmd = [sys.executable, "-m", "docktor.agent.cli", *args]
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout
    return on_a_terminal(cmd, env)


def test_bench_prints_a_rich_table_on_a_terminal(traces: Path) -> None:
    out = real_cli("bench", "--traces", str(traces), "--policies", "docktor,oracle", terminal=True)
    assert "\x1b[" in out  # styled: the docktor rows stand out
    assert "─" in out and "|" not in out  # a drawn header rule, not Markdown
    header = next(line for line in out.splitlines() if "trace" in line)
    assert "SLO met" in header and "max backlog" in header
    assert "2 traces x 2 policies simulated in" in out


def test_a_narrow_terminal_wraps_headers_and_never_drops_a_column(traces: Path) -> None:
    out = real_cli("bench", "--traces", str(traces / "spike.csv"), "--policies", "docktor,oracle", terminal=True, columns=60)
    plain = [line for line in out.replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines() if line.strip()]
    assert any(line.split()[-1] == "reversals" for line in plain)  # the last column is still there
    spike = [line.split() for line in plain if line.lstrip().startswith("spike")]
    assert [row[1] for row in spike] == ["docktor", "oracle"] and all(len(row) == 11 for row in spike)


def test_bench_piped_is_plain_aligned_columns(traces: Path) -> None:
    out = real_cli("bench", "--traces", str(traces), "--policies", "docktor,oracle", terminal=False)
    lines = out.splitlines()
    assert "\x1b[" not in out and "|" not in out and "─" not in out
    assert lines[0].split()[:4] == ["trace", "policy", "SLO", "met"]
    rows = [line.split() for line in lines[1:5]]
    assert [r[:2] for r in rows] == [["flat", "docktor"], ["flat", "oracle"], ["spike", "docktor"], ["spike", "oracle"]]
    assert all(len(r) == 11 for r in rows)  # one cell per column, '-' where there is nothing
    # aligned: every number column ends at the same offset on every line
    assert len({len(line) for line in lines[:5]}) == 1


def test_bench_takes_a_single_trace_file_and_counts_in_the_singular(traces: Path) -> None:
    r = runner.invoke(app(), ["bench", "--traces", str(traces / "spike.csv"), "--policies", "docktor"])
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().splitlines()[-2].startswith("1 trace x 1 policy simulated in ")
    rows = [json.loads(x) for x in runner.invoke(app(), ["bench", "--traces", str(traces / "spike.csv"), "--json"]).stdout.splitlines()]
    assert {row["trace"] for row in rows} == {"spike"}


def test_simulate_prints_the_same_table_plain_and_markdown(traces: Path) -> None:
    plain = runner.invoke(app(), ["simulate", str(traces / "flat.csv"), "--policy", "docktor"])
    md = runner.invoke(app(), ["simulate", str(traces / "flat.csv"), "--policy", "docktor", "--markdown"])
    assert plain.exit_code == md.exit_code == 0, plain.output + md.output
    assert plain.stdout.splitlines()[1].split()[:2] == ["flat", "docktor"] and "|" not in plain.stdout
    assert md.stdout.splitlines()[2].startswith("| flat  | docktor |")
