"""``docktor bench``: every policy on every trace, scored against the oracle; table, JSON and plots."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.agent.config.model import LLMConfig
from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.advisors import Advisor, LLMAdvisor, adversarial_advisor
from docktor.agent.sim.baselines import oracle_replica_seconds, run_policy
from docktor.agent.sim.catalog import ADVISABLE, ADVISORS, DEFAULT_POLICIES, POLICY_NAMES
from docktor.agent.sim.simulator import Run, Scenario, workload
from docktor.agent.sim.trace_file import Trace


def parse_policies(text: str | None, arg: str = "--policies") -> list[str]:
    if not text:
        return list(DEFAULT_POLICIES)
    names = [p.strip() for p in text.split(",") if p.strip()]
    for name in names:
        if name not in POLICY_NAMES:
            raise UsageError([Problem(arg, f"unknown policy {name!r} (choose from {', '.join(POLICY_NAMES)})")])
    if not names:
        raise UsageError([Problem(arg, "no policy named")])
    return list(dict.fromkeys(names))


def make_advisor(name: str, llm: LLMConfig | None = None) -> Advisor | None:
    if name == "none":
        return None
    if name == "adversarial":
        return adversarial_advisor()
    if name == "llm":
        if llm is None:
            raise UsageError([Problem("--advisor", "llm needs --llm-config (a docktor.yaml whose llm: block names the endpoint)")])
        return LLMAdvisor(llm)
    raise UsageError([Problem("--advisor", f"unknown advisor {name!r} (choose from {', '.join(ADVISORS)})")])


@dataclass
class Result:
    trace: Trace
    oracle: float
    runs: dict[str, Run]
    rows: list[dict[str, Any]]


def oracle_row(trace: Trace, scenario: Scenario, oracle: float) -> dict[str, Any]:
    """The oracle is a bound, not a run: it meets the SLO by construction and has no waits to show."""
    n = trace.messages
    return {
        "trace": trace.name,
        "policy": "oracle",
        "advisor": "none",
        "messages": n,
        "slo_attainment": 1.0,
        "p50_wait_s": None,
        "p99_wait_s": None,
        "max_backlog": None,
        "replica_seconds": round(oracle, 1),
        "work_seconds": round(n * scenario.service_s, 1),
        "oracle_replica_seconds": round(oracle, 1),
        "cost_ratio": 1.0,
        "actions": None,
        "reversals": None,
    }


def run_trace(
    trace: Trace,
    scenario: Scenario,
    policies: Sequence[str],
    advisor: str = "none",
    llm: LLMConfig | None = None,
) -> Result:
    load = workload(trace, scenario)
    oracle = oracle_replica_seconds(trace, scenario, load)
    runs: dict[str, Run] = {}
    rows: list[dict[str, Any]] = []
    for name in policies:
        if name == "oracle":
            rows.append(oracle_row(trace, scenario, oracle))
            continue
        adv = make_advisor(advisor, llm) if advisor != "none" and name in ADVISABLE else None
        try:
            run = run_policy(name, trace, scenario, load, adv)
        finally:
            if isinstance(adv, LLMAdvisor):
                adv.close()
        runs[name] = run
        row = run.summary(oracle)
        row = {"trace": row.pop("trace"), "policy": row.pop("policy"), "advisor": advisor if adv else "none", **row}
        rows.append(row)
    return Result(trace, oracle, runs, rows)


def add_bounds(results: Sequence[Result], scenario: Scenario) -> float | None:
    """Each row's ``× bound``: its replica-seconds over the start-up-aware LP bound of its trace
    (:mod:`docktor.agent.sim.lp_bound`). Returns the seconds the LPs took, or None without scipy
    (the rows then carry None, and the table says "needs scipy")."""
    from docktor.agent.sim import lp_bound

    if not lp_bound.available():
        for res in results:
            for row in res.rows:
                row["bound_replica_seconds"] = row["cost_vs_bound"] = None
        return None
    started = time.perf_counter()
    for res in results:
        try:
            bound = lp_bound.lp_bound(res.trace, scenario, workload(res.trace, scenario))
        except lp_bound.NoScheduleInTime:
            bound = None
            for row in res.rows:
                row["bound_note"] = NONE_IN_TIME
        for row in res.rows:
            row["bound_replica_seconds"] = None if bound is None else round(bound, 1)
            row["cost_vs_bound"] = round(row["replica_seconds"] / bound, 3) if bound else None
    return time.perf_counter() - started


def run_suite(
    traces: Sequence[Trace], scenario: Scenario, policies: Sequence[str], advisor: str = "none", llm: LLMConfig | None = None
) -> tuple[list[Result], float]:
    scenario.check()
    if advisor not in ADVISORS:
        raise UsageError([Problem("--advisor", f"unknown advisor {advisor!r} (choose from {', '.join(ADVISORS)})")])
    if advisor == "llm" and llm is None:
        make_advisor(advisor)  # raises: fail before the first trace, not in the middle
    if advisor != "none" and not any(p in ADVISABLE for p in policies):
        raise UsageError([Problem("--advisor", f"advisors apply to {', '.join(ADVISABLE)}; none of them is in --policies")])
    started = time.perf_counter()
    results = [run_trace(t, scenario, policies, advisor, llm) for t in traces]
    return results, time.perf_counter() - started


# --------------------------------------------------------------------------- output


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "s":
        return f"{value:.2f}"
    if kind == "ratio":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "rs":
        return f"{value:,.0f}"
    return str(value)


COLUMNS = [
    ("trace", "trace", "str"),
    ("policy", "policy", "str"),
    ("slo_attainment", "SLO met", "pct"),
    ("p50_wait_s", "p50 s", "s"),
    ("p99_wait_s", "p99 s", "s"),
    ("max_backlog", "max backlog", "int"),
    ("replica_seconds", "replica-s", "rs"),
    ("cost_ratio", "vs oracle", "ratio"),
    ("cost_vs_bound", "× bound", "ratio"),
    ("actions", "actions", "int"),
    ("reversals", "reversals", "int"),
]


#: what the ``× bound`` column says where the LP could not be solved (scipy is the bench extra)
NEEDS_SCIPY = "needs scipy"
#: ... and where no schedule starts every message in time (a start-up longer than the wait budget
#: with more load from the start than min_replicas serve), so no least cost of doing so exists
NONE_IN_TIME = "none in time"


def cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[bool]]:
    """The table's header, its rows as formatted cells, and which columns are numbers.

    ``× bound`` is shown only for rows that were given one (:func:`add_bounds`, ``docktor bench``)."""
    columns = [c for c in COLUMNS if c[0] != "cost_vs_bound" or any("cost_vs_bound" in r for r in rows)]
    header = [h for _, h, _ in columns]
    body = []
    for r in rows:
        policy = r["policy"] + (f"+{r['advisor']}" if r.get("advisor", "none") != "none" else "")
        if "target_per_replica" in r:
            policy += f" ({r['target_per_replica']:g}/replica)"
        body.append([
            policy if key == "policy"
            else r.get("bound_note", NEEDS_SCIPY) if key == "cost_vs_bound" and r.get("bound_replica_seconds", 0) is None
            else _fmt(r.get(key), kind)
            for key, _, kind in columns
        ])
    numeric = [kind != "str" for _, _, kind in columns]
    return header, body, numeric


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown table the docs paste (aligned, so it also reads as plain text)."""
    header, body, numeric = cells(rows)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), sep, *[line(b) for b in body]])


def plot(result: Result, scenario: Scenario, directory: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    trace = result.trace
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1.2]})
    axes[0].plot(range(len(trace.rates)), trace.rates, color="0.35", linewidth=0.6)
    axes[0].set_ylabel("arrivals (msg/s)")
    axes[0].set_title(f"{trace.name}: {scenario.service_s * 1000:g} ms/msg (cv {scenario.cv:g}), start-up "
                      f"{scenario.startup_s:g} s, SLO {scenario.slo_s:g} s")
    need = [math.ceil(r * scenario.service_s) for r in trace.rates]
    axes[1].plot(range(len(need)), need, color="0.75", linewidth=0.6, label="work (rate x service time)")
    for name, run in result.runs.items():
        ts = [t for t, _, _ in run.timeline]
        alive = [a for _, _, a in run.timeline]
        style = {"linewidth": 2.0} if name == "docktor" else {"linewidth": 1.0, "alpha": 0.8}
        axes[1].step(ts, alive, where="post", label=name, **style)
        axes[2].plot(range(len(run.backlog)), [max(1, b) for b in run.backlog], label=name, **style)
    axes[1].set_ylabel("replicas")
    axes[1].legend(fontsize=7, ncol=4, loc="upper right")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("backlog (messages)")
    axes[2].set_xlabel("time (s)")
    axes[1].set_xlim(0, len(trace.rates))
    fig.tight_layout()
    out = directory / f"{trace.name}.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
