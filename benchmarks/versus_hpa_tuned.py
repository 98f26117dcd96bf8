"""``docktor`` against ``hpa-tuned`` per trace, and the most any schedule could save against it.

    python -m benchmarks.versus_hpa_tuned [--held-out 7,8]

Issue 13 asks for 25 % fewer replica-seconds than ``hpa-tuned`` on every trace, at equal or
better attainment. ``hpa-tuned`` is the HPA with the per-replica target that is cheapest in
hindsight at >= 99.5 % attainment, so it may start a few messages late. The most any schedule
could save against it is bounded by the oracle that allows as many late messages
(``oracle_replica_seconds(..., misses=k)``): no schedule that starts at most ``k`` messages late,
``k`` being ``hpa-tuned``'s own count, costs less. Where that bound is above 0.75x ``hpa-tuned``,
25 % fewer is impossible, whatever the policy knows.

Issue 26 restates the bar: at least min(25 %, 75 % of the most any schedule could save); the
last two columns say how much of the most ``docktor`` saves, and whether that bar is met.

Prints one Markdown table (the one in docs/benchmarks.md), default scenario.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import public_and_held_out
from docktor.agent.sim.baselines import oracle_replica_seconds, run_policy, tune_hpa
from docktor.agent.sim.simulator import Scenario, workload

#: the issue's bar: this much fewer replica-seconds than hpa-tuned
SAVING = 0.25

#: issue 26's bar: at least this share of the most any schedule could save (or SAVING, if less)
SHARE = 0.75

HEADER = (
    "| trace | docktor SLO met | docktor vs oracle | hpa-tuned SLO met (target) | hpa-tuned late | "
    "docktor ÷ hpa-tuned | docktor uses fewer | bound ÷ hpa-tuned | the most any schedule could save | ≥ 25 % fewer | "
    "share of the most | ≥ min(25 %, 75 % of the most) |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", default="7,8", help="comma-separated seeds of the held-out traces")
    args = parser.parse_args()
    traces = public_and_held_out(args.held_out)
    scenario = Scenario()
    print(HEADER)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    verdicts: dict[str, int] = {}
    shares: dict[str, int] = {}
    for trace in traces:
        load = workload(trace, scenario)
        oracle = oracle_replica_seconds(trace, scenario, load)
        docktor = run_policy("docktor", trace, scenario, load)
        tuned = tune_hpa(trace, scenario, load)
        late_docktor = int(np.sum(docktor.waits > scenario.slo_s))
        late_tuned = int(np.sum(tuned.run.waits > scenario.slo_s))
        # the cheapest any schedule could be at hpa-tuned's attainment (its late messages allowed)
        bound = oracle_replica_seconds(trace, scenario, load, misses=late_tuned)
        hpa_rs = tuned.run.replica_seconds
        ratio = docktor.replica_seconds / hpa_rs
        if bound / hpa_rs > 1 - SAVING:
            verdict = "impossible"
        elif ratio <= 1 - SAVING and late_docktor <= late_tuned:
            verdict = "met"
        else:
            verdict = "**missed**"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        most = 1 - bound / hpa_rs
        share = (1 - ratio) / most if most > 0 else 1.0
        bar = "met" if 1 - ratio >= min(SAVING, SHARE * most) - 1e-12 and late_docktor <= late_tuned else "**missed**"
        shares[bar] = shares.get(bar, 0) + 1
        n = docktor.messages
        print(
            f"| {trace.name} | {100 * (1 - late_docktor / n):.2f}% | {docktor.replica_seconds / oracle:.2f}x"
            f" | {100 * (1 - late_tuned / n):.2f}% ({tuned.target:g}) | {late_tuned}"
            f" | {ratio:.2f} | {100 * (1 - ratio):.1f}% | {bound / hpa_rs:.3f} | {100 * (1 - bound / hpa_rs):.1f}%"
            f" | {verdict} | {100 * share:.0f}% | {bar} |",
            flush=True,
        )
    print()
    print("≥ 25 % fewer: " + ", ".join(f"{v.strip('*')}: {c}" for v, c in verdicts.items()) + f" (of {len(traces)} traces)")
    print("≥ min(25 %, 75 % of the most): " + ", ".join(f"{v.strip('*')}: {c}" for v, c in shares.items()))


if __name__ == "__main__":
    main()
