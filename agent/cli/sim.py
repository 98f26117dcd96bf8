"""``docktor simulate`` and ``docktor bench``: replay load traces against the scaling policies.

Registered into the main app by :func:`register`; bad input is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from docktor.agent.cli.common import handles_errors
from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.catalog import ADVISORS, DEFAULT_TRACES, POLICY_NAMES

if TYPE_CHECKING:
    from docktor.agent.config.model import LLMConfig
    from docktor.agent.sim.simulator import Scenario
    from docktor.agent.sim.trace_file import Trace

#: what ``bench --grid`` runs unless --policies says otherwise (the grid is long: hundreds of cells)
GRID_POLICIES = ("docktor", "hpa-tuned", "keda", "oracle")

ServiceMs = Annotated[float, typer.Option("--service-ms", help="Mean processing time per message, ms.")]
Cv = Annotated[float, typer.Option("--cv", help="Coefficient of variation of processing times (0: constant).")]
StartupS = Annotated[float, typer.Option("--startup-s", help="Seconds before a new replica takes work.")]
SloS = Annotated[float, typer.Option("--slo-s", help="Wait SLO: seconds a message may wait in the queue.")]
IntervalS = Annotated[float, typer.Option("--interval-s", help="Check interval of docktor, rules and target.")]
PeerPeriodS = Annotated[
    float | None,
    typer.Option("--peer-period-s", help="Sync period of the HPA and polling interval of KEDA (default: theirs, 15 s and 30 s)."),
]
MinR = Annotated[int, typer.Option("--min", help="Minimum replicas.")]
MaxR = Annotated[int, typer.Option("--max", help="Maximum replicas.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (arrival times within a second, service times).")]
AdvisorOpt = Annotated[
    str, typer.Option("--advisor", help=f"Advisor on docktor/rules/target: {'|'.join(ADVISORS)}.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="A Markdown table (as in docs/benchmarks.md) instead of the terminal's.")]
LLMConfigOpt = Annotated[
    Path | None,
    typer.Option("--llm-config", help="--advisor llm: a docktor.yaml whose llm: block names the endpoint."),
]


def _llm(path: Path | None) -> LLMConfig | None:
    if path is None:
        return None
    from docktor.agent.config.load import load_config

    return load_config(path).llm


def _scenario(
    service_ms: float, cv: float, startup_s: float, slo_s: float, interval_s: float, lo: int, hi: int, seed: int,
    peer_period_s: float | None = None,
) -> Scenario:
    from docktor.agent.sim.simulator import Scenario

    s = Scenario(
        peer_period_s=peer_period_s,
        service_s=service_ms / 1000.0,
        cv=cv,
        startup_s=startup_s,
        slo_s=slo_s,
        interval_s=interval_s,
        min_replicas=lo,
        max_replicas=hi,
        seed=seed,
    )
    s.check()
    return s


def _trace_path(arg: str) -> Path:
    p = Path(arg)
    if p.exists():
        return p
    named = DEFAULT_TRACES / f"{arg}.csv"
    if named.exists():
        return named
    raise UsageError([Problem("TRACE", f"{arg}: no such file (nor a trace of that name in {DEFAULT_TRACES})")])


def register(app: typer.Typer) -> None:
    @app.command(short_help="Replay a load trace against one policy.")
    @handles_errors
    def simulate(
        trace: Annotated[str, typer.Argument(help="A t,rate CSV, or the name of a shipped trace (burst-every-minute, diurnal, ramp, step).")],
        policy: Annotated[str, typer.Option("--policy", help=f"One of: {', '.join(POLICY_NAMES)}.")] = "docktor",
        advisor: AdvisorOpt = "none",
        llm_config: LLMConfigOpt = None,
        service_ms: ServiceMs = 20.0,
        cv: Cv = 0.5,
        startup_s: StartupS = 10.0,
        slo_s: SloS = 30.0,
        interval_s: IntervalS = 5.0,
        peer_period_s: PeerPeriodS = None,
        min_replicas: MinR = 1,
        max_replicas: MaxR = 50,
        seed: Seed = 1,
        as_json: JsonOpt = False,
        markdown: MarkdownOpt = False,
        timeline: Annotated[
            Path | None, typer.Option("--timeline", help="Write t,desired,alive per check to this CSV.")
        ] = None,
    ) -> None:
        """Replay one trace against one policy and print its score."""
        from docktor.agent.sim.bench import parse_policies, run_suite
        from docktor.agent.sim.trace_file import load_trace

        scenario = _scenario(service_ms, cv, startup_s, slo_s, interval_s, min_replicas, max_replicas, seed, peer_period_s)
        names = parse_policies(policy, "--policy")
        if len(names) != 1:
            raise UsageError([Problem("--policy", "simulate takes one policy (bench runs several)")])
        tr = load_trace(_trace_path(trace))
        result = run_suite([tr], scenario, names, advisor, _llm(llm_config))[0][0]
        row = result.rows[0]
        if as_json:
            print(json.dumps(row))
        else:
            print_rows([row], markdown)
        if timeline is not None and names[0] in result.runs:
            lines = ["t,desired,alive"] + [f"{t:g},{d},{a}" for t, d, a in result.runs[names[0]].timeline]
            try:
                timeline.write_text("\n".join(lines) + "\n", encoding="utf-8")
            except OSError as e:
                raise UsageError([Problem("--timeline", f"cannot write {timeline}: {e}")]) from None

    @app.command(short_help="Every policy on every trace, vs an oracle.")
    @handles_errors
    def bench(
        traces: Annotated[
            Path,
            typer.Option("--traces", help="A t,rate CSV trace, or a directory of them (default: the public traces shipped with Docktor)."),
        ] = DEFAULT_TRACES,
        public: Annotated[
            bool, typer.Option("--public/--no-public", help="Include the traces of --traces (--no-public: only --held-out).")
        ] = True,
        held_out: Annotated[
            str | None,
            typer.Option("--held-out", help="Comma-separated seeds: add the held-out traces the generator draws for each (docktor.agent.sim.trace_gen)."),
        ] = None,
        policies: Annotated[
            str | None, typer.Option("--policies", help=f"Comma-separated; default all: {','.join(POLICY_NAMES)} (with --grid: {','.join(GRID_POLICIES)}).")
        ] = None,
        advisor: AdvisorOpt = "none",
        llm_config: LLMConfigOpt = None,
        service_ms: ServiceMs = 20.0,
        cv: Cv = 0.5,
        startup_s: StartupS = 10.0,
        slo_s: SloS = 30.0,
        interval_s: IntervalS = 5.0,
        peer_period_s: PeerPeriodS = None,
        min_replicas: MinR = 1,
        max_replicas: MaxR = 50,
        seed: Seed = 1,
        as_json: JsonOpt = False,
        markdown: MarkdownOpt = False,
        plot_dir: Annotated[Path | None, typer.Option("--plot", help="Write one PNG per trace into this directory.")] = None,
        grid: Annotated[
            bool,
            typer.Option("--grid", help="Run every trace in a grid of scenarios (each axis varied around the options above) and report the worst case."),
        ] = False,
        grid_startup: Annotated[str | None, typer.Option("--grid-startup", help="Start-up delays of the grid, s (default 2,10,30,60).")] = None,
        grid_slo: Annotated[str | None, typer.Option("--grid-slo", help="Wait SLOs of the grid, s (default 5,15,30,60,120).")] = None,
        grid_cv: Annotated[str | None, typer.Option("--grid-cv", help="Service-time cvs of the grid (default 0,0.5,1,2).")] = None,
        grid_interval: Annotated[
            str | None, typer.Option("--grid-interval", help="Check intervals of the grid, s (default 1,5,15,30).")
        ] = None,
        versus: Annotated[
            str, typer.Option("--versus", help="--grid: list the cells where docktor's attainment is below all of these.")
        ] = "hpa-tuned,keda",
        jobs: Annotated[int, typer.Option("--jobs", help="--grid: cells simulated in parallel processes.")] = 1,
        from_log: Annotated[
            Path | None,
            typer.Option("--from-log", help="Replay the load a decision log recorded (.docktor/decisions.jsonl) through your config and the alternatives."),
        ] = None,
        service: Annotated[str | None, typer.Option("--service", help="--from-log: the service to replay (needed when the log has several).")] = None,
        config: Annotated[Path, typer.Option("--config", "-c", metavar="FILE", help="--from-log: the docktor.yaml that ran.")] = Path("docktor.yaml"),
    ) -> None:
        """Every policy on every trace: SLO attainment, waits and replica-seconds against the oracle."""
        from docktor.agent.sim.bench import parse_policies, plot, run_suite

        if from_log is not None:
            if grid or held_out or plot_dir is not None:
                raise UsageError([Problem("--from-log", "replays one log: it does not take --grid, --held-out or --plot")])
            _from_log(from_log, service, config, policies, cv, seed, as_json, markdown)
            return
        scenario = _scenario(service_ms, cv, startup_s, slo_s, interval_s, min_replicas, max_replicas, seed, peer_period_s)
        names = parse_policies(policies if policies or not grid else ",".join(GRID_POLICIES))
        loaded = _load(traces if public else None, held_out)
        if grid:
            _grid(loaded, scenario, names, (grid_startup, grid_slo, grid_cv, grid_interval), versus, jobs, as_json)
            return
        results, elapsed = run_suite(loaded, scenario, names, advisor, _llm(llm_config))
        rows = [r for res in results for r in res.rows]
        if as_json:
            for r in rows:
                print(json.dumps(r))
        else:
            print_rows(rows, markdown)
            print(f"\n{counted(len(loaded), 'trace')} x {counted(len(names), 'policy', 'policies')} simulated in {elapsed:.1f} s")
        if plot_dir is not None:
            try:
                for res in results:
                    out = plot(res, scenario, plot_dir)
                    if not as_json:
                        print(f"wrote {out}")
            except OSError as e:
                raise UsageError([Problem("--plot", f"cannot write into {plot_dir}: {e}")]) from None


def counted(n: int, one: str, many: str | None = None) -> str:
    """``1 trace``, ``4 traces``, ``1 policy``, ``9 policies``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def print_rows(rows: list[dict[str, Any]], markdown: bool) -> None:
    """The score table: Markdown with ``--markdown``; else a rich table on a terminal, and plain
    aligned columns (no box characters, nothing to strip) when piped into a file or a tool."""
    from docktor.agent.sim.bench import cells, table

    if markdown:
        print(table(rows))
        return
    from rich.console import Console

    console = Console()
    header, body, numeric = cells(rows)
    if not console.is_terminal:
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        for line in [header, *body]:
            print("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(line, widths, numeric)).rstrip())
        return
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    def laid_out(widths: list[int]) -> tuple[Table, int]:
        grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name, num, width in zip(header, numeric, widths, strict=True):
            grid.add_column(name, justify="right" if num else "left", width=width)
        for i, line in enumerate(body):
            last_of_trace = i + 1 == len(body) or body[i + 1][0] != line[0]  # a rule between traces
            grid.add_row(*line, style="bold" if line[1] == "docktor" else None, end_section=last_of_trace)
        return grid, Measurement.get(console, console.options.update_width(10_000), grid).maximum

    # Fixed widths, so rich never cuts a number: the headers' on one line if that fits the
    # terminal, else headers wrapped at their spaces ("max backlog" over two lines); a terminal
    # too narrow even for that gets long lines it wraps itself, never a column dropped.
    columns = list(zip(header, *body))
    grid, width = laid_out([max(len(c) for c in col) for col in columns])
    if width > console.width:
        grid, width = laid_out([max(len(w) for w in [*col[0].split(), *col[1:]]) for col in columns])
        if width > console.width:
            console = Console(width=width)  # print() caps a width at the console's own
    console.print(grid)


def _from_log(path: Path, service: str | None, config: Path, policies: str | None, cv: float, seed: int,
              as_json: bool, markdown: bool) -> None:
    """``bench --from-log``: rebuild the load from the log, replay it, say how and what it cannot know."""
    from docktor.agent.cli.common import load
    from docktor.agent.sim.bench import parse_policies
    from docktor.agent.sim.from_log import pick_service, read_decisions, rebuild
    from docktor.agent.sim.replay_log import FROM_LOG_POLICIES, replay, summary_lines

    names = parse_policies(policies) if policies else list(FROM_LOG_POLICIES)
    if cv < 0:
        raise UsageError([Problem("--cv", "must be >= 0")])
    records = read_decisions(path)
    name = pick_service(records, service)
    cfg = load(config)
    svc = next((s for s in cfg.services if s.name == name), None)
    if svc is None:
        have = ", ".join(s.name for s in cfg.services)
        raise UsageError([Problem("--config", f"{config} has no service {name!r} (it has: {have}): give the config that ran")])
    rebuilt = rebuild(records, name, svc, cv=cv, seed=seed)
    result = replay(rebuilt, svc, names)
    if as_json:
        for r in result.rows:
            print(json.dumps(r))
        print(json.dumps({"rebuilt": {"service": name, "how": rebuilt.how, "cannot_know": rebuilt.unknown,
                                      "best": result.best, "summary": summary_lines(result)}}))
        return
    print(f"service {name}: the load the daemon logged, replayed (docktor bench --from-log)")
    print("rebuilt from the log:")
    print("\n".join(f"  {line}" for line in rebuilt.how))
    print("what it cannot know:")
    print("\n".join(f"  {line}" for line in rebuilt.unknown))
    print()
    print_rows(result.rows, markdown)
    print()
    print("\n".join(summary_lines(result)))


def _load(source: Path | None, held_out: str | None) -> list[Trace]:
    from docktor.agent.sim.trace_file import load_trace, load_traces

    if source is not None and not source.exists():
        raise UsageError([Problem("--traces", f"{source}: no such file or directory")])
    loaded = [] if source is None else [load_trace(source)] if source.is_file() else load_traces(source)
    if held_out:
        from docktor.agent.sim.trace_gen import held_out_traces

        try:
            seeds = [int(x) for x in held_out.split(",") if x.strip()]
        except ValueError:
            raise UsageError([Problem("--held-out", f"expected comma-separated integer seeds, got {held_out!r}")]) from None
        loaded += [t for s in seeds for t in held_out_traces(s)]
    if not loaded:
        raise UsageError([Problem("--no-public", "no traces left: add --held-out SEEDS")])
    return loaded


def _grid(
    loaded: list[Trace],
    scenario: Scenario,
    names: list[str],
    axes_text: tuple[str | None, str | None, str | None, str | None],
    versus_text: str,
    jobs: int,
    as_json: bool,
) -> None:
    import time

    from docktor.agent.sim.bench import parse_policies
    from docktor.agent.sim.grid import AXIS_OPTIONS, DEFAULT_AXES, parse_values, report, run_grid, scenarios

    axes = {
        field: parse_values(text, AXIS_OPTIONS[field], DEFAULT_AXES[field])
        for field, text in zip(DEFAULT_AXES, axes_text, strict=True)
    }
    versus = parse_policies(versus_text, "--versus") if versus_text else []
    if jobs < 1:
        raise UsageError([Problem("--jobs", "must be >= 1")])
    cells = scenarios(scenario, axes)
    started = time.perf_counter()
    rows = run_grid(loaded, cells, names, jobs)
    elapsed = time.perf_counter() - started
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    print(report(rows, cells, loaded, versus))
    print(f"\nsimulated in {elapsed:.0f} s ({jobs} job{'s' if jobs != 1 else ''})")


__all__ = ["register"]
