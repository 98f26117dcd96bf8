"""Docktor's plugin test kit: in-memory fakes, stand-in peers, and the contract suite.

* :class:`FakeSource` / :class:`FakeQueue` and :class:`FakeExecutor` / :class:`FakeFleet`: real
  implementations of the SDK (``kind: fake``, ``executor: fake``), scripted by the test, that the
  real daemon can run (:func:`docktor.tools.registry.installed`); see their modules.
* :mod:`~docktor.tools.testing.standins`: loopback servers for the faults a real peer cannot
  produce on demand (garbage, silence).
* :class:`KubeStandIn`: a stand-in Kubernetes API server (none can be installed here), with the
  documented semantics of what the Kubernetes executor uses (:mod:`.kube_standin`).
* :func:`source_contract` / :func:`executor_contract`: the rules every plugin keeps, as one
  parametrized pytest test (``docs/plugins.md``, "Testing it").

Importing this package needs no pytest; building a contract suite imports it.
"""

from __future__ import annotations

from docktor.tools.testing.cases import Case, ExecutorPeer, NotApplicable, SourcePeer, Violation
from docktor.tools.testing.contract import EXECUTOR_CHECKS, SOURCE_CHECKS, executor_contract, source_contract
from docktor.tools.testing.fake_executor import FakeExecutor, FakeExecutorSettings, FakeFleet
from docktor.tools.testing.fake_source import FakeQueue, FakeSource, FakeSourceSettings
from docktor.tools.testing.kube_standin import KubeStandIn
from docktor.tools.testing.standins import GarbageHttpServer, GarbageServer, SilentServer, StandIn, closed_port

__all__ = [
    "EXECUTOR_CHECKS",
    "SOURCE_CHECKS",
    "Case",
    "ExecutorPeer",
    "FakeExecutor",
    "FakeExecutorSettings",
    "FakeFleet",
    "FakeQueue",
    "FakeSource",
    "FakeSourceSettings",
    "GarbageHttpServer",
    "GarbageServer",
    "KubeStandIn",
    "NotApplicable",
    "SilentServer",
    "SourcePeer",
    "StandIn",
    "Violation",
    "closed_port",
    "executor_contract",
    "source_contract",
]
