"""``python -m benchmarks.memory_save``: what the policy's memory costs a save of a docktor service's state file.

The docktor policy runs the simulator's ``diurnal`` trace, played twice over (two hours: the
history of 5 s ticks is full after one), at ``docktor bench --cap-rate 500``'s
scenario (the workers together complete at most 500 messages/s, so "scaling is not helping"
verdicts are judged and the closed loop corrects) through the production controller
(``decide.step`` then ``remember``, what the daemon runs). Once its history is full
(``HISTORY_POINTS`` ticks), every ``--every``-th tick's state is saved as the daemon saves it:
``persist.capture`` (with ``policy_memory.dump``), then the JSON the state file holds. Reported:
the CPU time of ``dump`` alone and of the whole ``capture``, and the file's size (largest, and
largest with verdicts in it).

``--against DIR``: the same measurement at another checkout's code in the same run, one round
each after the other (``--rounds``), each in a process of its own: ``DIR/.venv/bin/python`` runs
this module with its own ``docktor`` (the decisions are the same code; only the save differs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRACE = "diurnal"
CAP_RATE = 500.0


def _measure(every: int) -> dict[str, Any]:
    import numpy as np

    from docktor.agent.config.model import LLMConfig
    from docktor.agent.core.state import HISTORY_POINTS
    from docktor.agent.runtime import policy_memory
    from docktor.agent.runtime.identity import Identity
    from docktor.agent.runtime.persist import SavedState, capture
    from docktor.agent.sim.baselines import ProductionController, docktor_service
    from docktor.agent.sim.catalog import DEFAULT_TRACES
    from docktor.agent.sim.scenario import Scenario
    from docktor.agent.sim.simulator import simulate
    from docktor.agent.sim.trace_file import Trace, load_traces

    [day] = load_traces(DEFAULT_TRACES, [TRACE])
    trace = Trace(f"{TRACE} x2", np.concatenate([day.rates, day.rates]))
    scenario = Scenario(cap_rate=CAP_RATE)
    svc = docktor_service(scenario)
    identity = Identity.of(svc, None, LLMConfig())
    dumps: list[float] = []
    captures: list[float] = []
    sizes: list[int] = []
    with_verdicts: list[int] = []
    ticks = 0

    class Saving(ProductionController):
        def tick(self, obs: dict[str, float], current: int, now: float) -> int:
            nonlocal ticks
            target = super().tick(obs, current, now)
            ticks += 1
            if len(self.state.history) >= HISTORY_POINTS and ticks % every == 0:
                began = time.process_time()
                policy_memory.dump(svc, self.state, wall=1e9 + now, mono=now)
                dumps.append((time.process_time() - began) * 1000)
                began = time.process_time()
                doc = capture(SavedState(identity, self.state), service=svc.name, window=svc.scale_down_stabilization,
                              wall=1e9 + now, mono=now, svc=svc)
                body = json.dumps(doc, separators=(",", ":"))  # as persist.StateStore.save writes it
                captures.append((time.process_time() - began) * 1000)
                sizes.append(len(body))
                if doc["memory"] and doc["memory"].get("verdicts", {}).get("judged"):
                    with_verdicts.append(len(body))
            return target

    simulate(trace, scenario, Saving("docktor", svc))
    q = sorted(captures)
    return {"saves": len(captures), "dump_ms_p50": round(statistics.median(dumps), 3),
            "capture_ms_p50": round(statistics.median(captures), 3), "capture_ms_p99": round(q[int(0.99 * (len(q) - 1))], 3),
            "bytes_max": max(sizes), "with_verdicts": len(with_verdicts), "bytes_max_with_verdicts": max(with_verdicts, default=0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_save", description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=5, help="save every N-th tick once the history is full")
    parser.add_argument("--against", type=Path, help="another checkout (with its .venv) measured in the same run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(_measure(args.every)))
        return 0

    here = Path(__file__).resolve().parent.parent
    checkouts = {"this checkout": (here, Path(sys.executable))}
    if args.against is not None:
        checkouts[str(args.against)] = (args.against, args.against / ".venv" / "bin" / "python")
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
    commits = {name: subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    timeout=30, check=True).stdout.strip() for name, (path, _) in checkouts.items()}
    for _ in range(args.rounds):
        for name, (_, python) in checkouts.items():
            # this folder's benchmarks package, the checkout's own docktor (its editable install)
            out = subprocess.run([str(python), "-m", "benchmarks.memory_save", "--run", "--every", str(args.every)],
                                 cwd=here, capture_output=True, text=True, timeout=1800, check=True).stdout
            rows[name].append(json.loads(out))
    print(f"docktor policy, {TRACE} trace twice over at --cap-rate {CAP_RATE:g}, a save every {args.every} ticks once the history is full "
          f"(load average {os.getloadavg()[0]:.1f}), median of {args.rounds} rounds:")
    for name, runs in rows.items():
        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        r = runs[-1]
        print(f"  {name} ({commits[name]}): policy_memory.dump {med('dump_ms_p50'):.3f} ms, capture {med('capture_ms_p50'):.3f} ms "
              f"(p99 {med('capture_ms_p99'):.3f} ms) CPU per save over {r['saves']} saves; file up to {r['bytes_max']} bytes, "
              f"{r['bytes_max_with_verdicts']} with verdicts ({r['with_verdicts']} saves had some)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
