"""``docktor keda`` with the current count read from the workload's ``/scale``: a real ``docktor
keda`` process reading a real NATS JetStream stream, a real gRPC client asking what KEDA asks, and
the workload on a STAND-IN Kubernetes API server (docktor.tools.testing.KubeStandIn: none can be
installed here), where the test plays the HPA by writing ``/scale`` as it does.

Each decision starts from the count the HPA set (``current_replicas``), and what KEDA is told is
still Docktor's decision, never the HPA's count echoed back; when the API refuses the read (its
Role removed), the count last asked for stands in and every record says why. Docktor never writes to the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.testing import KubeStandIn
from tests.support.daemons import records
from tests.support.jetstream import make_stream, publish
from tests.support.keda_client import Keda, keda_config, nats_queue, start_keda
from tests.support.kubeconfigs import HPA_TOKEN, hpa_sets, write_kubeconfig
from tests.support.peers import NatsServer, start_nats
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)

WORKER = {"service": "worker"}
TOKEN = "docktor-keda-reader-token"


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats(tmp_path / "js")
    try:
        asyncio.run(make_stream(server.url, 0))
        yield server
    finally:
        server.stop()


def decided_from(log: Path, current: int) -> list[dict[str, Any]]:
    return [r for r in records(log, "worker") if r["current_replicas"] == current]


async def test_decisions_start_from_the_hpa_s_count_and_keda_is_told_docktor_s(tmp_path: Path, nats: NatsServer) -> None:
    with KubeStandIn({TOKEN: {("apps", "deployments/scale", "get")}, HPA_TOKEN: None}) as api:
        api.add_workload("Deployment", "worker", 1, namespace="jobs")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, TOKEN)
        config = keda_config(tmp_path, [{
            "name": "worker", "executor": "keda", "initial_replicas": 1, "scaled_object": "jobs/worker",
            "workload": "worker", "kubeconfig": str(kubeconfig), "request_timeout": 2,
            "min_replicas": 1, "max_replicas": 10, "cooldown_up": 0, "cooldown_down": 0, "scale_down_stabilization": 0,
            "queue": nats_queue(nats.url),
        }])
        log = tmp_path / "state" / "decisions.jsonl"
        keda = start_keda(config, tmp_path / "keda.out")
        client = Keda(keda.address)
        try:
            await publish(nats.url, "jobs.x", 450)  # 450 waiting at 100 per replica: 5
            # (the messages arrive over a few ticks: each decision starts from the 1 the HPA still has)
            up = await eventually("a scale-up to 5 from the count read", lambda: [
                r for r in decided_from(log, 1) if r["target_replicas"] == 5 and r.get("executed")])
            assert up[0]["decision"] == "scale_up" and "served to KEDA" in up[0]["outcome"]["message"]
            assert up[0]["observations"]["replicas.desired"] == 1.0 and not up[0]["errors"]
            assert await client.metric(WORKER, "docktor-worker") == 5.0
            assert api.workload("Deployment", "worker", "jobs").replicas == 1  # Docktor told KEDA; it wrote nothing

            await hpa_sets(api, 3)  # the HPA carried out part of it (its behavior, a bound): the next decision starts at 3
            from_three = await eventually("a decision from the HPA's 3", lambda: decided_from(log, 3))
            assert from_three[0]["target_replicas"] == 5 and from_three[0]["decision"] == "scale_up"
            assert await client.metric(WORKER, "docktor-worker") == 5.0  # Docktor's count, not the HPA's 3

            await hpa_sets(api, 5)
            settled = await eventually("a hold at the HPA's 5", lambda: [r for r in decided_from(log, 5) if r["decision"] == "hold"])
            assert settled[0]["target_replicas"] == 5 and not settled[0]["errors"]
            assert await client.metric(WORKER, "docktor-worker") == 5.0

            # every request Docktor made was a read of /scale; the only writes were the HPA's two
            assert {(s.verb, s.resource, s.code) for s in api.served} == {("get", "deployments/scale", 200), ("update", "deployments/scale", 200)}
            assert sum(s.verb == "update" for s in api.served) == 2

            api.tokens[TOKEN] = set()  # its Role removed: the count last asked for stands in, and each record says why
            fallen = await eventually("a decision on the count last asked for", lambda: [
                r for r in records(log, "worker") if any("the current count cannot be read" in e for e in r["errors"])])
            assert fallen[0]["current_replicas"] == 5
            (said,) = [e for e in fallen[0]["errors"] if e.startswith("executor: ")]
            assert said.startswith("executor: 5, the count last asked of KEDA: the current count cannot be read (")
            assert 'cannot get resource "deployments/scale"' in said and "(see examples/kubernetes/docktor-keda.yaml)" in said
            assert TOKEN not in said
            assert await client.metric(WORKER, "docktor-worker") == 5.0
        finally:
            await client.close()
            assert keda.stop() == 0, keda.log_text()[-2000:]
