"""``docktor bench --grid``: the policies over a grid of scenarios, reported by their worst case.

Four traces in one scenario prove little about a policy that must work for any service. The
grid varies what differs between services, one axis at a time around the base scenario (the
corners, e.g. a 60 s start-up against a 5 s SLO, are hopeless for every reactive policy and
would only measure ``min_replicas``):

- start-up delay (``--startup-s``): how long a new replica takes to serve;
- wait SLO (``--slo-s``), the budget the queue may use;
- service-time variability (``--cv``);
- the controllers' period: along this axis every controller decides at the same period (docktor's
  ``check_interval``, the HPA's ``--horizontal-pod-autoscaler-sync-period``, KEDA's
  ``pollingInterval``), so the axis measures how each copes with seeing the queue that seldom,
  not who polls faster. The base scenario keeps each one's default (5 s, 15 s, 30 s).

Every cell is one (scenario, trace). The summary per policy is the worst attainment, the
geometric mean and worst of the cost against the oracle, and the cells where ``docktor``'s
attainment is below that of every other policy named in ``--versus`` (by default hpa-tuned and
keda).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from docktor.agent.problems import Problem, UsageError
from docktor.agent.sim.simulator import Scenario
from docktor.agent.sim.trace_file import Trace

#: the axes the issue asks for: start-up 2-60 s, SLO 5-120 s, cv 0-2, check interval 1-30 s
DEFAULT_AXES: dict[str, tuple[float, ...]] = {
    "startup_s": (2.0, 10.0, 30.0, 60.0),
    "slo_s": (5.0, 15.0, 30.0, 60.0, 120.0),
    "cv": (0.0, 0.5, 1.0, 2.0),
    "interval_s": (1.0, 5.0, 15.0, 30.0),
}
AXIS_OPTIONS = {"startup_s": "--grid-startup", "slo_s": "--grid-slo", "cv": "--grid-cv", "interval_s": "--grid-interval"}


def parse_values(text: str | None, option: str, default: tuple[float, ...]) -> tuple[float, ...]:
    if text is None:
        return default
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError([Problem(option, f"expected comma-separated numbers, got {text!r}")]) from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise UsageError([Problem(option, f"expected numbers >= 0, got {text!r}")])
    return values


def scenarios(base: Scenario, axes: dict[str, tuple[float, ...]]) -> list[Scenario]:
    """The base scenario, then each axis value with every other axis at the base."""
    out = [base]
    for field, values in axes.items():
        for v in values:
            if field == "interval_s" and v == base.interval_s:
                continue  # the base scenario, with each controller at its default period
            changes: dict[str, float] = {field: v}
            if field == "interval_s":
                changes["peer_period_s"] = v
            s = Scenario(**{**asdict(base), **changes})
            if s not in out:
                out.append(s)
    for s in out:
        s.check()
    return out


def describe(s: Scenario) -> str:
    period = f"every {s.interval_s:g}s" if s.peer_period_s else f"interval {s.interval_s:g}s"
    return f"startup {s.startup_s:g}s, SLO {s.slo_s:g}s, cv {s.cv:g}, {period}"


def _cell(args: tuple[Trace, Scenario, tuple[str, ...]]) -> list[dict[str, Any]]:
    from docktor.agent.sim.bench import run_trace

    trace, scenario, policies = args
    rows = run_trace(trace, scenario, policies).rows
    for r in rows:
        r.update(
            startup_s=scenario.startup_s, slo_s=scenario.slo_s, cv=scenario.cv, interval_s=scenario.interval_s,
            peer_period_s=scenario.peer_period_s,
        )
    return rows


def run_grid(
    traces: Sequence[Trace], cells: Sequence[Scenario], policies: Sequence[str], jobs: int = 1
) -> list[dict[str, Any]]:
    """Every policy on every (scenario, trace): the bench's rows, with the scenario's axes added."""
    work = [(t, s, tuple(policies)) for s in cells for t in traces]
    if jobs <= 1:
        return [r for w in work for r in _cell(w)]
    jobs = min(jobs, os.cpu_count() or 1, len(work))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return [r for rows in pool.map(_cell, work) for r in rows]


@dataclass(frozen=True)
class PolicySummary:
    policy: str
    cells: int
    worst_attainment: float
    worst_attainment_at: str
    below_goal: int  # cells under 99.5 %
    geomean_cost: float
    worst_cost: float
    worst_cost_at: str


def _where(r: dict[str, Any]) -> str:
    s = Scenario(startup_s=r["startup_s"], slo_s=r["slo_s"], cv=r["cv"], interval_s=r["interval_s"], peer_period_s=r.get("peer_period_s"))
    return f"{r['trace']} ({describe(s)})"


def summarize(rows: Iterable[dict[str, Any]], goal: float = 0.995) -> list[PolicySummary]:
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["policy"] != "oracle":
            by_policy.setdefault(r["policy"], []).append(r)
    out = []
    for policy, rs in by_policy.items():
        worst_att = min(rs, key=lambda r: r["slo_attainment"])
        costs = [r for r in rs if r["cost_ratio"]]
        worst_cost = max(costs, key=lambda r: r["cost_ratio"]) if costs else worst_att
        geo = math.exp(sum(math.log(r["cost_ratio"]) for r in costs) / len(costs)) if costs else math.nan
        out.append(
            PolicySummary(
                policy=policy,
                cells=len(rs),
                worst_attainment=worst_att["slo_attainment"],
                worst_attainment_at=_where(worst_att),
                below_goal=sum(1 for r in rs if r["slo_attainment"] < goal),
                geomean_cost=geo,
                worst_cost=worst_cost["cost_ratio"] or math.nan,
                worst_cost_at=_where(worst_cost),
            )
        )
    return out


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["trace"], r["startup_s"], r["slo_s"], r["cv"], r["interval_s"], r.get("peer_period_s"))


def below_all(rows: Sequence[dict[str, Any]], policy: str, versus: Sequence[str]) -> list[dict[str, Any]]:
    """Cells where ``policy``'s attainment is strictly below that of every policy in ``versus``."""
    att: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in rows:
        att.setdefault(_key(r), {})[r["policy"]] = r["slo_attainment"]
    worse = []
    for r in rows:
        if r["policy"] != policy:
            continue
        others = att[_key(r)]
        if all(p in others for p in versus) and all(r["slo_attainment"] < others[p] for p in versus):
            worse.append(r)
    return worse


def report(rows: Sequence[dict[str, Any]], cells: Sequence[Scenario], traces: Sequence[Trace], versus: Sequence[str]) -> str:
    lines = [f"{len(cells)} scenarios x {len(traces)} traces = {len(cells) * len(traces)} cells", ""]
    lines.append("| policy | cells | worst SLO met | cells < 99.5 % | cost vs oracle: geo. mean | worst |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    summaries = summarize(rows)
    for s in summaries:
        lines.append(
            f"| {s.policy} | {s.cells} | {100 * s.worst_attainment:.2f}% | {s.below_goal} | {s.geomean_cost:.2f}x | {s.worst_cost:.2f}x |"
        )
    lines.append("")
    for s in summaries:
        lines.append(f"{s.policy}: worst SLO met {100 * s.worst_attainment:.2f}% at {s.worst_attainment_at}; "
                     f"worst cost {s.worst_cost:.2f}x at {s.worst_cost_at}")
    policies = {r["policy"] for r in rows}
    if "docktor" in policies and versus and all(v in policies for v in versus):
        worse = below_all(rows, "docktor", versus)
        lines.append("")
        which = " and ".join(versus)
        if len(versus) == 2:
            which = "both " + which
        elif len(versus) > 2:
            which = "each of " + ", ".join(versus)
        lines.append(f"cells where docktor's SLO attainment is below {which}: {len(worse)}")
        for r in worse:
            lines.append(f"  {_where(r)}: docktor {100 * r['slo_attainment']:.2f}%")
    return "\n".join(lines)
