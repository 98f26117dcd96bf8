"""The Kubernetes executor against a STAND-IN API server (docktor.tools.testing.KubeStandIn): no
Kubernetes API server can be installed on these machines, so nothing here ran against a real
cluster. The stand-in implements the documented semantics of what the executor uses (the /scale
subresource and its resourceVersion conflicts, 401/403/404, pods by selector, annotation
merge-patch, HPAs, ScaledObjects, PodMetrics) and records every request it served.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from docktor.agent.config.load import load_config
from docktor.agent.runtime.supervisor import Supervisor
from docktor.tools import registry
from docktor.tools.executors import kubernetes_config
from docktor.tools.executors.kubernetes import KubernetesExecutor, KubernetesSettings
from docktor.tools.executors.kubernetes_pods import DELETION_COST
from docktor.tools.sdk import Context, ExecutorError
from docktor.tools.testing import FakeQueue, FakeSource, KubeStandIn
from tests.support.cli import docktor
from tests.support.hostile_yaml import billion_laughs
from tests.support.kubeconfigs import role_rights, write_kubeconfig, write_service_account
from tests.support.peers import REPO
from tests.support.servers import Certificates, make_certificates

pytestmark = pytest.mark.timeout(120)

TOKEN = "kube-token-canary-6f1c2d9e"
EXAMPLE = REPO / "examples" / "kubernetes" / "executor"


RBAC = EXAMPLE / "rbac.yaml"


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with KubeStandIn({TOKEN: None}, ready_after=0.2) as server:
        yield server


class Made:
    """The test's executors, closed when it ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[KubernetesExecutor] = []

    def __call__(self, server: KubeStandIn, folder: Path | None = None, token: str = TOKEN, **settings: Any) -> KubernetesExecutor:
        """An executor for ``worker`` through a kubeconfig (in ``folder``, made if need be) naming ``server``."""
        folder = folder or self.tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        config = write_kubeconfig(folder / "kubeconfig", server.url, token)
        block = {"kind": "kubernetes", "workload": "worker", "kubeconfig": str(config), "scale_timeout": 20} | settings
        return self.keep(KubernetesExecutor(KubernetesSettings.model_validate(block), Context("worker", folder, folder / "state")))

    def keep(self, executor: KubernetesExecutor) -> KubernetesExecutor:
        self.made.append(executor)
        return executor


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Made]:
    made = Made(tmp_path)
    yield made
    for executor in made.made:
        await executor.close()


def requests(server: KubeStandIn) -> list[tuple[str, str, int]]:
    return [(s.verb, s.resource, s.code) for s in server.served]


# --------------------------------------------------------------------------- scaling


async def test_scale_up_then_in_removes_the_idlest_pods_and_records_them(api: KubeStandIn, make: Made) -> None:
    api.add_workload("Deployment", "worker", 2)
    ex = make(api)
    grown = await ex.scale(4)
    assert grown.ok and grown.running == 4, grown.message
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (4, 4, 0)
    pods = api.workload("Deployment", "worker").pods
    for pod, cores in zip(pods, [0.40, 0.02, 0.90, 0.10], strict=True):
        pod.cpu = cores
    idlest = {pods[1].name, pods[3].name}

    shrunk = await ex.scale(2)
    assert shrunk.ok and shrunk.running == 2, shrunk.message
    assert {r.replica for r in shrunk.removed} == idlest
    assert {p.name for p in api.workload("Deployment", "worker").pods} == {pods[0].name, pods[2].name}
    why = {r.replica: r.why for r in shrunk.removed}
    assert why[pods[1].name].startswith("lowest CPU: 2.0%") and "pod-deletion-cost -2" in why[pods[1].name]
    assert why[pods[3].name].startswith("lowest CPU: 10.0%") and "pod-deletion-cost -1" in why[pods[3].name]
    # the costs were set on every pod before the count went down: the busiest keep the highest
    assert [pods[0].annotations[DELETION_COST], pods[2].annotations[DELETION_COST]] == ["0", "1"]
    patched = [i for i, r in enumerate(requests(api)) if r == ("patch", "pods", 200)]
    lowered = max(i for i, r in enumerate(requests(api)) if r == ("patch", "deployments/scale", 200))
    assert patched and max(patched) < lowered
    status = await ex.status()
    assert (status.desired, status.running) == (2, 2)
    assert status.metrics["cpu.max"] == pytest.approx(90.0) and status.metrics["cpu.avg"] == pytest.approx(65.0)
    assert status.metrics["mem.avg_mb"] == pytest.approx(64.0)


async def test_without_metrics_it_says_so_and_removes_the_not_ready_then_the_newest(make: Made) -> None:
    with KubeStandIn({TOKEN: None}, ready_after=0.2, metrics_api=False) as api:
        api.add_workload("Deployment", "worker", 3)
        ex = make(api)
        status = await ex.status()
        assert status.running == 3 and status.metrics == {}  # no figure rather than a made-up one
        pods = api.workload("Deployment", "worker").pods
        pods[0].waiting = "CrashLoopBackOff"  # the oldest stops being ready
        pods[2].created += 5  # the newest
        shrunk = await ex.scale(1)
        assert shrunk.ok, shrunk.message
        why = {r.replica: r.why for r in shrunk.removed}
        assert set(why) == {pods[0].name, pods[2].name}
        assert why[pods[0].name].startswith("not ready (Pending, CrashLoopBackOff)")
        assert why[pods[2].name].startswith("newest first: metrics.k8s.io does not answer (") and "404" in why[pods[2].name]


async def test_a_scale_in_waits_for_the_removed_pods_to_finish_terminating(tmp_path: Path, make: Made) -> None:
    with KubeStandIn({TOKEN: None}, ready_after=0.1, terminate_after=1.0) as api:
        api.add_workload("Deployment", "worker", 3)
        ex = make(api)
        shrunk = await ex.scale(1)
        assert shrunk.ok, shrunk.message
        assert all(p.deleted_at is None for p in api.workload("Deployment", "worker").pods)  # none still draining
        assert all(r.stopped.startswith("deleted by the controller; gone from the API within") for r in shrunk.removed)
        assert (await ex.scale(3)).ok
        short = make(api, tmp_path / "short", scale_timeout=0.3)
        stuck = await short.scale(1)
        assert not stuck.ok and "2 still terminating" in stuck.message
        assert all("still terminating (its grace period)" in r.stopped for r in stuck.removed) and len(stuck.removed) == 2


async def test_a_statefulset_loses_its_highest_ordinals(api: KubeStandIn, make: Made) -> None:
    api.add_workload("StatefulSet", "worker", 1)
    ex = make(api, workload_kind="StatefulSet")
    assert (await ex.scale(3)).ok
    shrunk = await ex.scale(1)
    assert shrunk.ok, shrunk.message
    assert sorted(r.replica for r in shrunk.removed) == ["worker-1", "worker-2"]
    assert all(r.why == "a StatefulSet removes its highest ordinal first" for r in shrunk.removed)
    assert not any(r[1] == "pods" and r[0] == "patch" for r in requests(api))  # deletion cost means nothing there


async def test_a_conflict_is_read_again_and_retried(api: KubeStandIn, make: Made) -> None:
    """Another writer changes the workload between the executor's read and its write: the API
    refuses the stale resourceVersion (409); the executor reads again, decides again, writes."""
    api.add_workload("Deployment", "worker", 2)
    api.concurrent_write("Deployment", "worker", replicas=3)
    ex = make(api)
    outcome = await ex.scale(1)
    assert outcome.ok and outcome.running == 1, outcome.message
    scale_calls = [r for r in requests(api) if r[1] == "deployments/scale"]
    assert scale_calls == [("get", "deployments/scale", 200), ("patch", "deployments/scale", 409),
                           ("get", "deployments/scale", 200), ("patch", "deployments/scale", 200)]
    assert len(outcome.removed) == 2  # decided again on what it read the second time (3 pods, not 2)


async def test_conflicts_every_time_leave_the_other_writer_s_count(api: KubeStandIn, make: Made) -> None:
    api.add_workload("Deployment", "worker", 2)
    api.concurrent_write("Deployment", "worker", replicas=5, times=10)
    ex = make(api)
    outcome = await ex.scale(1)
    assert not outcome.ok and "409 Conflict" in outcome.message and "not scaled" in outcome.message
    assert api.workload("Deployment", "worker").replicas == 5  # never overwritten blindly


async def test_pods_that_cannot_start_fail_the_scale_with_their_reason(api: KubeStandIn, make: Made) -> None:
    """The daemon backs off after a failed outcome, as for Compose; the outcome says why."""
    api.add_workload("Deployment", "worker", 0, waiting="ImagePullBackOff")
    ex = make(api)
    outcome = await ex.scale(2)
    assert not outcome.ok and outcome.running == 0
    assert "cannot start: container worker ImagePullBackOff" in outcome.message
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (2, 0, 2) and "ImagePullBackOff" in status.detail


DAEMON_CONFIG = """
state_dir: state
services:
  - name: {name}
    executor: kubernetes        # the flat form: the executor's keys beside the service's
    workload: worker
    kubeconfig: kubeconfig
    scale_timeout: 10s
    queue: {{kind: fake, timeout: 1s}}
    policy: target
    target_per_replica: 10
    min_replicas: 1
    max_replicas: 8
"""


async def test_the_daemon_backs_off_after_pods_that_cannot_start(tmp_path: Path, api: KubeStandIn) -> None:
    """On the real daemon (a scripted queue, docktor.tools.testing): the failed scale is recorded
    with the pod's reason and when it may try again, and the next tick is held by the back-off."""
    api.add_workload("Deployment", "worker", 1)
    api.workload("Deployment", "worker").waiting = "ImagePullBackOff"  # the next pods' image cannot be pulled
    write_kubeconfig(tmp_path / "kubeconfig", api.url, TOKEN)
    config = tmp_path / "docktor.yaml"
    config.write_text(DAEMON_CONFIG.format(name="kube-backoff"))
    queue = FakeQueue("kube-backoff", {"queue.backlog": 50.0})
    with registry.installed(FakeSource):
        daemon = Supervisor(load_config(config))
        await daemon.open()
        try:
            [first] = await daemon.run_once()
            queue.set({"queue.backlog": 80.0})  # more work: it would scale up again, but for the back-off
            [second] = await daemon.run_once()
        finally:
            await daemon.close()
    assert first.executed and first.target_replicas == 5 and first.outcome is not None
    assert first.outcome.status == "error" and "ImagePullBackOff" in first.outcome.message and first.outcome.retry_at
    assert second.current_replicas == 5 and second.proposal == 8
    assert not second.executed and any(g["name"] == "backoff" for g in second.guardrails), second.guardrails
    assert api.workload("Deployment", "worker").replicas == 5  # left where the failed scale set it, as documented


# --------------------------------------------------------------------------- refusals and errors


@pytest.mark.parametrize("controller", ["hpa", "scaledobject", "scaledobject-statefulset"])
async def test_it_refuses_a_workload_another_autoscaler_targets(api: KubeStandIn, controller: str, make: Made) -> None:
    kind = "StatefulSet" if controller.endswith("statefulset") else "Deployment"
    api.add_workload(kind, "worker", 1)
    api.add_hpa("other", "Deployment", "another-workload")  # targets something else: no matter
    if controller == "hpa":
        api.add_hpa("worker-hpa", kind, "worker")
    else:
        api.add_scaled_object("worker-so", "worker", target_kind="StatefulSet" if kind == "StatefulSet" else None)
    ex = make(api, workload_kind=kind)
    outcome = await ex.scale(3)
    named = "HorizontalPodAutoscaler worker-hpa" if controller == "hpa" else "ScaledObject worker-so"
    assert not outcome.ok and f"{named} already scales it" in outcome.message
    assert api.workload(kind, "worker").replicas == 1
    assert not any(r[0] == "patch" for r in requests(api))


async def test_no_keda_crd_means_no_scaled_object(make: Made) -> None:
    with KubeStandIn({TOKEN: None}, ready_after=0.1, keda_crd=False) as api:
        api.add_workload("Deployment", "worker", 1)
        ex = make(api)
        assert (await ex.scale(2)).ok
        assert ("list", "scaledobjects", 404) in requests(api)


async def test_forbidden_and_missing_are_one_clear_line(tmp_path: Path, make: Made) -> None:
    no_patch = role_rights(RBAC) - {("apps", "deployments/scale", "patch")}
    with KubeStandIn({TOKEN: no_patch}, ready_after=0.1) as api:
        api.add_workload("Deployment", "worker", 1)
        ex = make(api)
        missing = make(api, tmp_path / "m", workload="nope")
        outcome = await ex.scale(2)
        assert not outcome.ok and "\n" not in outcome.message
        assert '403 deployments.apps is forbidden: User "system:serviceaccount:default:docktor" cannot patch resource "deployments/scale"' in outcome.message
        assert "lacks a permission (see examples/kubernetes/executor/rbac.yaml)" in outcome.message
        assert [r for r in requests(api) if r[0] == "patch"] == [("patch", "deployments/scale", 403)]  # not retried
        with pytest.raises(ExecutorError, match=r"404 deployments.apps \"nope\" not found — no Deployment/nope in namespace default"):
            await missing.status()


async def test_a_refused_token_and_an_unreachable_server(tmp_path: Path, api: KubeStandIn, make: Made) -> None:
    api.add_workload("Deployment", "worker", 1)
    ex = make(api, token="not-a-known-token")
    with pytest.raises(ExecutorError, match="401 Unauthorized — the credentials were refused"):
        await ex.status()
    api.close()
    gone = make(api)
    with pytest.raises(ExecutorError, match=f"cannot reach the Kubernetes API at {api.url}"):
        await gone.status()
    assert not (await gone.scale(2)).ok


# --------------------------------------------------------------------------- credentials


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("kube-tls"))


async def test_a_kubeconfig_context_over_tls(tmp_path: Path, certificates: Certificates, make: Made) -> None:
    with KubeStandIn({TOKEN: None}, tls=(certificates.server_cert, certificates.server_key), ready_after=0.1) as api:
        api.add_workload("Deployment", "worker", 1, namespace="queues")
        config = write_kubeconfig(tmp_path / "config", api.url, TOKEN, ca=certificates.ca, more_contexts={"prod": "queues"})
        settings = KubernetesSettings(kind="kubernetes", kubeconfig=Path("config"), context="prod")
        ex = make.keep(KubernetesExecutor(settings, Context("worker", tmp_path, tmp_path / "state")))
        assert (await ex.scale(2)).ok
        assert ex.target() == f"{api.url}/queues/Deployment/worker"
        # the same server, trusted through another CA: refused, naming no secret
        write_kubeconfig(config, api.url, TOKEN, ca=certificates.other_ca, more_contexts={"prod": "queues"})
        ex = make.keep(KubernetesExecutor(settings, Context("worker", tmp_path, tmp_path / "state")))
        with pytest.raises(ExecutorError, match="CERTIFICATE_VERIFY_FAILED"):
            await ex.status()


async def test_a_kubeconfig_client_certificate(tmp_path: Path, certificates: Certificates, make: Made) -> None:
    """A user with ``client-certificate-data``/``client-key-data`` (no token) is known by its certificate."""
    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    tls = (certificates.server_cert, certificates.server_key)
    with KubeStandIn({"cert:docktor test client": None}, tls=tls, client_ca=certificates.ca, ready_after=0.1) as api:
        api.add_workload("Deployment", "worker", 1)
        user = {"client-certificate-data": data(certificates.client_cert), "client-key-data": data(certificates.client_key)}
        write_kubeconfig(tmp_path / "config", api.url, ca=certificates.ca, user=user)
        ex = make.keep(KubernetesExecutor(KubernetesSettings(kind="kubernetes", kubeconfig=Path("config")), Context("worker", tmp_path, tmp_path)))
        assert (await ex.scale(2)).ok
    user["client-key-data"] = data(certificates.server_key)  # not the certificate's key
    write_kubeconfig(tmp_path / "config", api.url, ca=certificates.ca, user=user)
    with pytest.raises(ExecutorError, match=r"context test: the client certificate and key cannot be loaded: .*KEY_VALUES_MISMATCH"):
        kubernetes_config.from_kubeconfig(tmp_path / "config", None)


def test_kubeconfig_mistakes_are_one_line(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", TOKEN)
    with pytest.raises(ExecutorError, match=r"no context named 'staging' in contexts \(it has: test\)"):
        kubernetes_config.from_kubeconfig(config, "staging")
    write_kubeconfig(config, "https://127.0.0.1:6443", user={"exec": {"command": "aws", "args": ["eks", "get-token"]}})
    with pytest.raises(ExecutorError, match="the user's exec is not supported"):
        kubernetes_config.from_kubeconfig(config, None)
    config.write_text("{not: [yaml")
    with pytest.raises(ExecutorError, match=f"kubeconfig {config} cannot be read as YAML"):
        kubernetes_config.from_kubeconfig(config, None)
    config.write_text(billion_laughs())  # a few hundred bytes that expand to 387 million values
    with pytest.raises(ExecutorError, match=f"kubeconfig {config} cannot be read as YAML: anchors and aliases expand"):
        kubernetes_config.from_kubeconfig(config, None)
    settings = KubernetesSettings(kind="kubernetes", kubeconfig=tmp_path / "absent")
    assert KubernetesExecutor.check(settings, Context("w", tmp_path, tmp_path)) == [
        f"kubeconfig {tmp_path / 'absent'} does not exist (set kubeconfig: or KUBECONFIG, or run inside a cluster)"]


async def test_in_cluster_service_account_with_a_rotated_token(
    tmp_path: Path, certificates: Certificates, monkeypatch: pytest.MonkeyPatch, make: Made
) -> None:
    account = write_service_account(tmp_path / "sa", "first-token", certificates.ca, "queues")
    with KubeStandIn({"first-token": None, "rotated-token": None}, tls=(certificates.server_cert, certificates.server_key),
                     ready_after=0.1) as api:
        api.add_workload("Deployment", "worker", 1, namespace="queues")
        monkeypatch.setattr(kubernetes_config, "SERVICE_ACCOUNT_DIR", account)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        ex = make.keep(KubernetesExecutor(KubernetesSettings(kind="kubernetes"), Context("worker", tmp_path, tmp_path / "state")))
        assert (await ex.status()).running == 1  # the namespace came from the service account
        (account / "token").write_text("rotated-token")  # the kubelet rewrites it in place
        del api.tokens["first-token"]
        assert (await ex.scale(2)).ok


async def test_the_token_reaches_no_description_error_record_or_log(
    tmp_path: Path, api: KubeStandIn, caplog: pytest.LogCaptureFixture, make: Made
) -> None:
    caplog.set_level(logging.DEBUG)
    api.tokens = {TOKEN: {("apps", "deployments", "get")}}
    api.add_workload("Deployment", "worker", 1)
    texts: list[str] = []
    ex = make(api)
    texts += [KubernetesExecutor.describe(ex.settings), ex.target(), repr(ex), repr(ex.api().credentials)]
    texts += KubernetesExecutor.check(ex.settings, ex.context)
    outcome = await ex.scale(2)  # 403 on the autoscaler list
    texts += [outcome.message, *(str(r) for r in outcome.removed)]
    with pytest.raises(ExecutorError) as refused:
        await make(api, tmp_path / "x", token=TOKEN + "-stale").status()
    texts.append(str(refused.value))
    texts.append(caplog.text)
    assert "403" in outcome.message
    assert not [t for t in texts if TOKEN in t]


# --------------------------------------------------------------------------- the examples


async def test_the_role_grants_exactly_what_the_executor_uses(tmp_path: Path, make: Made) -> None:
    """Every request of a full round (both kinds: status, up, in with metrics, the refusal checks)
    is allowed by the Role of examples/kubernetes/executor/rbac.yaml, and every verb it grants was used."""
    granted = role_rights(RBAC)
    with KubeStandIn({TOKEN: granted}, ready_after=0.1) as api:
        for kind, namespace in (("Deployment", "default"), ("StatefulSet", "queues")):  # their pods' labels would overlap
            api.add_workload(kind, "worker", 1, namespace=namespace)
            ex = make(api, tmp_path / kind, workload_kind=kind, namespace=namespace)
            await ex.status()
            for n in (3, 1):
                outcome = await ex.scale(n)
                assert outcome.ok, outcome.message
        refused = [s for s in api.served if s.code in (401, 403)]
        assert not refused, f"the Role does not allow: {refused}"
        assert api.used() == granted, f"granted, never used: {granted - api.used()}"


def test_the_example_config_validates() -> None:
    done = docktor("validate", "--config", str(EXAMPLE / "docktor.yaml"))
    assert done.returncode == 0, done.stderr
    assert "worker: kubernetes Deployment queues/worker executor, replicas 2-50" in done.stdout


async def test_the_standin_keeps_the_documented_semantics(api: KubeStandIn) -> None:
    """The parts of the stand-in the executor does not reach on its own: PUT with a stale or no
    resourceVersion, a patch type it does not serve, a request without a token."""
    api.add_workload("Deployment", "worker", 1)
    path = f"{api.url}/apis/apps/v1/namespaces/default/deployments/worker/scale"
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx2.AsyncClient(timeout=5) as client:
        scale = (await client.get(path, headers=auth)).json()
        stale = json.loads(json.dumps(scale))
        scale["spec"]["replicas"] = 2
        assert (await client.put(path, json=scale, headers=auth)).status_code == 200
        stale["spec"]["replicas"] = 4
        conflict = await client.put(path, json=stale, headers=auth)
        assert conflict.status_code == 409 and conflict.json()["reason"] == "Conflict"
        del stale["metadata"]["resourceVersion"]
        assert (await client.put(path, json=stale, headers=auth)).json()["spec"]["replicas"] == 4  # unconditional
        json_patch = await client.patch(path, content=b"[]", headers=auth | {"content-type": "application/json-patch+json"})
        assert json_patch.status_code == 415
        assert (await client.get(path)).status_code == 401
