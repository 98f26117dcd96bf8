"""What the simulator offers, by name: policies, advisors and the shipped traces (no heavy imports)."""

from __future__ import annotations

from pathlib import Path

#: every policy ``docktor bench`` can run; ``oracle`` is a bound, not a controller
POLICY_NAMES = (
    "docktor", "docktor-open", "rules", "target", "hpa", "hpa-tuned", "keda", "threshold-percent", "static", "oracle",
)
#: what ``docktor bench`` runs unless ``--policies`` says otherwise: ``docktor-open`` (the docktor
#: policy with ``closed_loop: false``) is there to be compared with ``docktor`` when asked for
DEFAULT_POLICIES = tuple(p for p in POLICY_NAMES if p != "docktor-open")
#: advisors ``--advisor`` can put on a production policy
ADVISORS = ("none", "adversarial", "llm")
#: policies an advisor can sit on: the ones that run the production decision
ADVISABLE = ("docktor", "rules", "target")
#: the public load traces, shipped with Docktor (package data)
DEFAULT_TRACES = Path(__file__).resolve().parent / "traces"
