"""The ``docktor`` policy with one guardrail default changed, on the public and held-out traces.

    python -m benchmarks.policy_defaults [--held-out 7,8]

docs/policy.md says why ``docktor``'s defaults have no scale-down stabilization window and a
step of up to x10 per check. This runs the policy as shipped and with each of those defaults
changed (``ServiceConfig.model_copy``), on the public traces and the held-out traces of the
given seeds, in the default scenario and with every controller checking every 30 s, and prints
per variant the geometric mean and worst of the cost against the oracle and the attainment.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from benchmarks import public_and_held_out
from docktor.agent.sim.baselines import ProductionController, docktor_service, oracle_replica_seconds
from docktor.agent.sim.simulator import Scenario, simulate, workload

#: each variant changes one of docktor's defaults (docktor.agent.config.model.POLICY_DEFAULTS)
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "stabilization 20s": {"scale_down_stabilization": 20.0},
    "up +100%/check": {"scale_up_percent": 100.0},
}
SCENARIOS = {"default scenario": Scenario(), "30 s checks": Scenario(interval_s=30.0, peer_period_s=30.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", default="7,8", help="comma-separated seeds of the held-out traces")
    args = parser.parse_args()
    traces = public_and_held_out(args.held_out)
    print(f"docktor with one default changed, on {len(traces)} traces")
    for label, scenario in SCENARIOS.items():
        for name, change in VARIANTS.items():
            costs, attainments = [], []
            for trace in traces:
                load = workload(trace, scenario)
                oracle = oracle_replica_seconds(trace, scenario, load)
                svc = docktor_service(scenario).model_copy(update=change)
                row = simulate(trace, scenario, ProductionController("docktor", svc), load=load).summary(oracle)
                costs.append(float(row["cost_ratio"]))  # type: ignore[arg-type]
                attainments.append(float(row["slo_attainment"]))  # type: ignore[arg-type]
            geomean = math.exp(sum(math.log(c) for c in costs) / len(costs))
            below = sum(a < 0.995 for a in attainments)
            print(
                f"{label:16} {name:18} cost vs oracle: geomean {geomean:.3f}x, worst {max(costs):.2f}x;"
                f"  worst SLO met {100 * min(attainments):.2f}%, traces < 99.5 %: {below}",
                flush=True,
            )


if __name__ == "__main__":
    main()
