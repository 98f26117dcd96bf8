"""``docktor bench --from-log``: replay a rebuilt load through the user's config and the alternatives.

The user's config runs as the daemon runs it: the same :func:`~docktor.agent.core.decide.step`
and guardrails (:class:`~docktor.agent.sim.baselines.ProductionController` on the user's own
:class:`~docktor.agent.config.model.ServiceConfig`), starting from the replicas the log found,
with the loop waiting for the executor as long as the log says it took. The alternatives are
``docktor bench``'s rows on the same bounds, check interval, SLO and start-up delay. The best
row a ``docktor.yaml`` can express is reported with the lines that would get it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from docktor.agent.config.model import ServiceConfig
from docktor.agent.sim.baselines import (
    TUNE_GOAL,
    ProductionController,
    docktor_service,
    oracle_replica_seconds,
    rules_service,
    run_policy,
)
from docktor.agent.sim.bench import oracle_row
from docktor.agent.sim.from_log import Rebuilt, arrivals_workload
from docktor.agent.sim.simulator import Run, Scenario, simulate
from docktor.agent.sim.trace_file import Trace

#: the row of the config that ran, and of what the daemon did under it
YOURS = "your config"
LOGGED = "your config, as logged"
#: what ``--from-log`` replays unless ``--policies`` says otherwise
FROM_LOG_POLICIES = ("docktor", "target", "rules", "hpa-tuned", "oracle")
#: rows a docktor.yaml can express (hpa-tuned is Kubernetes' HPA; oracle is a bound)
EXPRESSIBLE = (YOURS, "docktor", "target", "rules", "target-tuned")
#: the settings a config change may name (the rest are the user's own in every row)
CHANGEABLE = (
    "policy", "target_per_replica", "scale_up_by", "scale_up_percent", "scale_down_by", "scale_down_percent",
    "cooldown_up", "cooldown_down", "scale_down_stabilization", "rules",
)


class AsTheDaemonRuns:
    """A production controller ticking as the daemon's loop does with this executor.

    It starts from the replicas the log found, and it does not tick while the executor is still
    acting: the daemon's loop awaits the executor (a scale-in of workers that outlive SIGTERM
    takes the executor's whole grace period), and then runs the slot it overran at once.
    """

    def __init__(self, inner: ProductionController, first: int, start_call_s: float, stop_s: float, held: float = 1.0,
                 first_rates: dict[str, float] | None = None, history: list[tuple[float, int, dict[str, float]]] | None = None,
                 held_at: list[tuple[float, float]] | None = None, ticks: list[float] | None = None) -> None:
        self.inner = inner
        self.ticks = ticks or []
        self.held_at = held_at or []
        self.history = history or []
        self.held = held
        self.first_rates = first_rates or {}
        self.name = inner.name
        self.interval = inner.interval
        #: the log's first reading is a running loop's (its rates are first_rates): no warm-up read
        self.warm_up = False
        self.first = first
        self.start_call_s, self.stop_s = start_call_s, stop_s
        self.busy_until = -math.inf

    def initial(self, scenario: Scenario, trace: Trace) -> int:
        for t, current, obs in self.history:  # what the daemon's policy had seen before the first reading
            self.inner.tick(obs, current, t)
        return max(0, self.first)

    def tick(self, obs: dict[str, float], current: int, now: float) -> int:
        if now + self.interval <= self.busy_until:
            return current  # still acting: this slot never ran
        if now == 0.0:
            obs = {**self.first_rates, **obs}  # the log's first reading had rates: the daemon had read the queue before
        target = self.inner.tick(self.prefetched(obs, now), current, self.clock(now))
        if target != current:
            self.busy_until = now + (self.start_call_s if target > current else self.stop_s)
        return target

    def clock(self, now: float) -> float:
        """The daemon's own time at this tick, from the log: a tick runs a few milliseconds after
        its slot, and the policies compare times (is a count older than the start-up delay?),
        so a replay on the exact grid can fall on the other side of a boundary."""
        i = bisect.bisect_left(self.ticks, now - self.interval / 2)
        if i < len(self.ticks) and abs(self.ticks[i] - now) < self.interval / 2:
            return self.ticks[i]
        return now

    def prefetched(self, obs: dict[str, float], now: float) -> dict[str, float]:
        """The reading as workers that hold several messages each report it: those they fetched
        but have not started are in flight (``ack_pending``), no longer pending. As many per busy
        replica as the log's reading at that time had (it varies with when each fetched its
        batch, and the docktor policy's Little's law reads it), else the log's average."""
        busy, pending = obs.get("queue.ack_pending"), obs.get("queue.pending")
        if self.held <= 1.0 or busy is None or pending is None:
            return obs
        i = bisect.bisect_left(self.held_at, now - self.interval / 2, key=lambda x: x[0])
        held = self.held_at[i][1] if i < len(self.held_at) and abs(self.held_at[i][0] - now) <= self.interval / 2 else self.held
        moved = min(pending, math.floor(busy * (max(1.0, held) - 1.0) + 0.5))
        return {**obs, "queue.ack_pending": busy + moved, "queue.pending": pending - moved, "queue.lag": pending - moved}


@dataclass
class Replay:
    rebuilt: Rebuilt
    rows: list[dict[str, Any]]
    runs: dict[str, Run]
    configs: dict[str, ServiceConfig]
    best: str | None


def replay(rebuilt: Rebuilt, svc: ServiceConfig, policies: Sequence[str] = FROM_LOG_POLICIES) -> Replay:
    scenario, trace = rebuilt.scenario, rebuilt.trace
    load = arrivals_workload(rebuilt)
    oracle = oracle_replica_seconds(trace, scenario, load)
    configs: dict[str, ServiceConfig] = {YOURS: svc}
    runs: dict[str, Run] = {}

    def production(name: str, config: ServiceConfig) -> Run:
        ctl = AsTheDaemonRuns(ProductionController(name, config), rebuilt.initial, rebuilt.start_call_s, scenario.stop_s,
                              rebuilt.held_per_replica, rebuilt.first_rates, rebuilt.history, rebuilt.held_at,
                              rebuilt.ticks)
        configs[name] = config
        return simulate(trace, scenario, ctl, load=load)

    runs[YOURS] = production(YOURS, svc)
    for name in policies:
        if name == "oracle" or name in runs:
            continue
        if name in ("docktor", "target"):
            runs[name] = production(name, docktor_service(scenario, name))
        elif name == "rules":
            runs[name] = production(name, rules_service(scenario))
        else:
            runs[name] = run_policy(name, trace, scenario, load)
    tuned = runs.get("hpa-tuned")
    if tuned is not None and "target_per_replica" in tuned.params and _attainment(tuned) >= TUNE_GOAL:
        # Docktor's own target policy at the per-replica target the tuned HPA chose: what a
        # docktor.yaml can say of that row
        config = docktor_service(scenario, "target").model_copy(update={"target_per_replica": tuned.params["target_per_replica"]})
        runs["target-tuned"] = production("target-tuned", config)
        runs["target-tuned"].params["target_per_replica"] = tuned.params["target_per_replica"]

    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        row = run.summary(oracle)
        rows.append({"trace": row.pop("trace"), "policy": row.pop("policy"), **row})
        if name == YOURS and rebuilt.actual_replica_seconds is not None:
            rows.append(_logged_row(rebuilt, rebuilt.actual_replica_seconds, oracle))
    if "oracle" in policies:
        rows.append(oracle_row(trace, scenario, oracle))
    return Replay(rebuilt, rows, runs, configs, _best(rows))


def _attainment(run: Run) -> float:
    return float(run.summary()["slo_attainment"])  # type: ignore[arg-type]


def _logged_row(rebuilt: Rebuilt, actual: float, oracle: float) -> dict[str, Any]:
    return {
        "trace": rebuilt.trace.name,
        "policy": LOGGED,
        "messages": rebuilt.trace.messages,
        "slo_attainment": None,  # the log has no per-message waits
        "p50_wait_s": None,
        "p99_wait_s": None,
        "max_backlog": None,
        "replica_seconds": round(actual, 1),
        "work_seconds": round(rebuilt.trace.messages * rebuilt.scenario.service_s, 1),
        "oracle_replica_seconds": round(oracle, 1),
        "cost_ratio": round(actual / oracle, 3) if oracle else None,
        "actions": rebuilt.actual_actions,
        "reversals": None,
    }


def _best(rows: list[dict[str, Any]]) -> str | None:
    """The cheapest expressible row among those meeting the goal (99.5 %, or the best attainment
    any expressible row reached when none does); the user's config wins a tie."""
    candidates = [r for r in rows if r["policy"] in EXPRESSIBLE and r["slo_attainment"] is not None]
    if not candidates:
        return None
    goal = min(TUNE_GOAL, max(r["slo_attainment"] for r in candidates))
    meeting = [r for r in candidates if r["slo_attainment"] >= goal - 1e-12]
    best = min(meeting, key=lambda r: (r["replica_seconds"], r["policy"] != YOURS))
    return str(best["policy"])


# --------------------------------------------------------------------------- the change


def config_change(yours: ServiceConfig, other: ServiceConfig) -> list[str]:
    """YAML lines that turn the user's service into ``other`` (only the settings that differ)."""
    lines: list[str] = []
    for key in CHANGEABLE:
        mine, theirs = getattr(yours, key), getattr(other, key)
        if key == "target_per_replica" and other.policy != "target":
            continue  # only the target policy reads it
        if mine == theirs:
            continue
        if key == "rules":
            lines += _rules_yaml(other)
        else:
            lines.append(f"{key}: {_scalar(theirs)}")
    return lines


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _rules_yaml(svc: ServiceConfig) -> list[str]:
    if not svc.rules.scale_up_when and not svc.rules.scale_down_when:
        return ["rules: {}"]
    out = ["rules:"]
    for key in ("scale_up_when", "scale_down_when"):
        rules = getattr(svc.rules, key)
        if rules:
            out.append(f"  {key}:")
            out += [f"    - {{metric: {r.metric}, op: \"{r.op}\", value: {r.value:g}}}" for r in rules]
    return out


def summary_lines(result: Replay) -> list[str]:
    """What the daemon did next to the replay, and the change that gets the best row."""
    rb, by = result.rebuilt, {r["policy"]: r for r in result.rows}
    yours, logged = by[YOURS], by.get(LOGGED)
    replayed = yours["replica_seconds"]
    lines = [f"your config ({result.configs[YOURS].policy}) replayed: {replayed:,.0f} replica-s, {yours['actions']} actions, "
             f"SLO met {100 * yours['slo_attainment']:.2f}%"]
    if logged is not None:
        actual = logged["replica_seconds"]
        diff = (replayed - actual) / actual * 100 if actual else 0.0
        lines = [f"what the daemon did under your config ({result.configs[YOURS].policy}): {actual:,.0f} replica-s, "
                 f"{logged['actions']} actions; replayed: {replayed:,.0f} replica-s ({diff:+.1f} %), {yours['actions']} actions, "
                 f"SLO met {100 * yours['slo_attainment']:.2f}%"]
    best = result.best
    if best is None:
        return lines
    row = by[best]
    if best == YOURS:
        lines.append(f"best row: your config ({100 * row['slo_attainment']:.2f}% SLO met at {row['replica_seconds']:,.0f} "
                     "replica-s): no change to suggest")
        return lines
    change = config_change(result.configs[YOURS], result.configs[best])
    lines.append(f"best row: {best} ({100 * row['slo_attainment']:.2f}% SLO met at {row['replica_seconds']:,.0f} replica-s, "
                 f"vs {100 * yours['slo_attainment']:.2f}% at {replayed:,.0f}); to get it, set under service {rb.service}:")
    lines += [f"    {line}" for line in change] or ["    (nothing differs in the settings a replay compares)"]
    return lines
