"""``docktor simulate`` and ``docktor bench``: replay load traces against the scaling policies.

Registered into the main app by :func:`register`; bad input is one ``error:`` line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from docktor.agent.cli.common import handles_errors
from docktor.agent.cli.score_table import print_rows
from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.catalog import ADVISORS, DEFAULT_POLICIES, DEFAULT_TRACES, POLICY_NAMES

if TYPE_CHECKING:
    from docktor.agent.config.headroom_setting import Headroom
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
HeadroomOpt = Annotated[
    str,
    typer.Option("--headroom", help="headroom of docktor and target: replicas (2), or seconds of the recent peak rate (30s)."),
]
Drift = Annotated[
    float, typer.Option("--drift", help="Service times of messages arriving from the trace's midpoint on, times this (3: workers got 3x slower).")
]
CapRate = Annotated[
    float | None,
    typer.Option("--cap-rate", help="Messages/s all replicas together can complete, whatever their count (a downstream limit)."),
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
    peer_period_s: float | None = None, headroom: str = "0", drift: float = 1.0, cap_rate: float | None = None,
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
        headroom=_headroom(headroom),
        drift=drift,
        cap_rate=cap_rate,
    )
    s.check()
    return s


def _headroom(text: str) -> Headroom:
    from pydantic import ValidationError

    from docktor.agent.config.headroom_setting import Headroom

    try:
        return Headroom.model_validate(text)
    except ValidationError as e:
        raise UsageError([Problem("--headroom", e.errors()[0]["msg"].replace("Value error, ", ""))]) from None


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
        headroom: HeadroomOpt = "0",
        drift: Drift = 1.0,
        cap_rate: CapRate = None,
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

        scenario = _scenario(service_ms, cv, startup_s, slo_s, interval_s, min_replicas, max_replicas, seed, peer_period_s, headroom, drift, cap_rate)
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
        ctx: typer.Context,
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
            str | None, typer.Option("--policies", help=f"Comma-separated; default all but docktor-open: {','.join(DEFAULT_POLICIES)} (with --grid: {','.join(GRID_POLICIES)}).")
        ] = None,
        advisor: AdvisorOpt = "none",
        llm_config: LLMConfigOpt = None,
        service_ms: ServiceMs = 20.0,
        cv: Cv = 0.5,
        startup_s: StartupS = 10.0,
        slo_s: SloS = 30.0,
        interval_s: IntervalS = 5.0,
        peer_period_s: PeerPeriodS = None,
        headroom: HeadroomOpt = "0",
        drift: Drift = 1.0,
        cap_rate: CapRate = None,
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
        config: Annotated[
            Path, typer.Option("--config", "-c", metavar="FILE", help="--from-log/--from-prometheus: the docktor.yaml that ran.")
        ] = Path("docktor.yaml"),
        from_prometheus: Annotated[
            str | None, typer.Option("--from-prometheus", metavar="URL", help="Replay an arrival rate from Prometheus (with --query).")
        ] = None,
        query: Annotated[str | None, typer.Option("--query", help="--from-prometheus: PromQL giving messages/s, e.g. sum(rate(jobs_total[1m])).")] = None,
        since: Annotated[
            str | None, typer.Option("--since", help="How far back (30m, 2h, 1d) or from when (RFC 3339): --from-prometheus 1h unless given; --from-log the whole log unless given.")
        ] = None,
    ) -> None:
        """Every policy on every trace: SLO attainment, waits and replica-seconds against the oracle."""
        from docktor.agent.sim.bench import add_bounds, parse_policies, plot, run_suite

        if plot_dir is not None and not _can_plot():
            raise UsageError([Problem("--plot", "needs matplotlib, which this install lacks: pip install 'docktor[plots]'")])

        if from_log is not None or from_prometheus is not None:
            flag = "--from-log" if from_log is not None else "--from-prometheus"
            if from_log is not None and from_prometheus is not None:
                raise UsageError([Problem("--from-log", "replays one source: give --from-log or --from-prometheus, not both")])
            if grid or held_out or plot_dir is not None:
                raise UsageError([Problem(flag, "replays one load: it does not take --grid, --held-out or --plot")])
            # a rate series says nothing of the service time: --service-ms counts only when given
            given = getattr(ctx.get_parameter_source("service_ms"), "name", "DEFAULT") != "DEFAULT"
            prom = None if from_prometheus is None else (from_prometheus, query, since or "1h", service_ms if given else None)
            from docktor.agent.cli.replay import replay_load

            replay_load(from_log, prom, service, config, policies, cv, seed, as_json, markdown, since=since)
            return
        scenario = _scenario(service_ms, cv, startup_s, slo_s, interval_s, min_replicas, max_replicas, seed, peer_period_s, headroom, drift, cap_rate)
        names = parse_policies(policies if policies or not grid else ",".join(GRID_POLICIES))
        loaded = _load(traces if public else None, held_out)
        if grid:
            _grid(loaded, scenario, names, (grid_startup, grid_slo, grid_cv, grid_interval), versus, jobs, as_json)
            return
        results, elapsed = run_suite(loaded, scenario, names, advisor, _llm(llm_config))
        solved = add_bounds(results, scenario)
        rows = [r for res in results for r in res.rows]
        if as_json:
            for r in rows:
                print(json.dumps(r))
        else:
            print_rows(rows, markdown)
            print(f"\n{counted(len(loaded), 'trace')} x {counted(len(names), 'policy', 'policies')} simulated in {elapsed:.1f} s")
            if solved is None:
                print("× bound: the start-up-aware LP bound needs scipy: pip install 'docktor[bench]'")
            else:
                print(f"× bound: the start-up-aware LP bound, solved in {solved:.1f} s")
        if plot_dir is not None:
            try:
                for res in results:
                    out = plot(res, scenario, plot_dir)
                    if not as_json:
                        print(f"wrote {out}")
            except OSError as e:
                raise UsageError([Problem("--plot", f"cannot write into {plot_dir}: {e}")]) from None


def _can_plot() -> bool:
    """Whether matplotlib (the ``plots`` extra) is installed: asked before any trace is simulated."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def counted(n: int, one: str, many: str | None = None) -> str:
    """``1 trace``, ``4 traces``, ``1 policy``, ``9 policies``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


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
    if "docktor" in names and versus:
        _spare_report(rows, cells, loaded, versus)


def _spare_report(rows: list[dict[str, Any]], cells: list[Scenario], loaded: list[Trace], versus: list[str]) -> None:
    """For each cell a peer won on attainment: the spare replicas (``headroom``) that would have won it, and their price."""
    import time

    from docktor.agent.sim.grid import describe
    from docktor.agent.sim.spare import MAX_SPARE, lines, lost_cells, spare_to_win

    started = time.perf_counter()
    by_name = {t.name: t for t in loaded}
    by_axes = {(c.startup_s, c.slo_s, c.cv, c.interval_s, c.peer_period_s): c for c in cells}
    lost = lost_cells(rows, versus)
    spares = [
        spare_to_win(by_name[r["trace"]], by_axes[(r["startup_s"], r["slo_s"], r["cv"], r["interval_s"], r.get("peer_period_s"))],
                     r, peer, goal)
        for r, peer, goal in lost
    ]
    print(f"\ncells where docktor's SLO attainment is below a peer's ({', '.join(versus)}): {len(lost)}; "
          f"the spare replicas held above its count (headroom, 1 to {MAX_SPARE}) that would have won each:")
    for line in lines(spares, describe):
        print(line)
    print(f"searched in {time.perf_counter() - started:.0f} s")


__all__ = ["register"]
