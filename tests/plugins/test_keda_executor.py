"""executor: keda keeps the count it was asked for (the count ``docktor keda`` serves) across a
restart, refuses a state file it cannot trust, and never claims to have verified anything. With a
workload named, its current count is the HPA's, read from the workload's /scale on a STAND-IN
Kubernetes API server (none can be installed here); when that cannot be read, the count last
asked for, saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docktor.tools.executors.keda import KedaExecutor, KedaSettings
from docktor.tools.sdk import Context, ExecutorError
from docktor.tools.testing import KubeStandIn
from tests.support.kubeconfigs import HPA_TOKEN, hpa_sets, role_rights, write_kubeconfig
from tests.support.peers import REPO


def _executor(tmp_path: Path, **settings: object) -> KedaExecutor:
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return KedaExecutor(KedaSettings.model_validate({"kind": "keda", "initial_replicas": 2, **settings}), Context("worker", tmp_path, state))


async def test_the_count_asked_for_survives_a_restart(tmp_path: Path) -> None:
    first = _executor(tmp_path)
    assert (await first.status()).desired == 2  # nothing asked yet: initial_replicas
    outcome = await first.scale(7)
    assert outcome.ok and outcome.running is None and "nothing is actuated" in outcome.message and "(was 2)" in outcome.message
    saved = tmp_path / "state" / "keda" / "worker.json"
    assert json.loads(saved.read_bytes())["replicas"] == 7 and saved.stat().st_mode & 0o777 == 0o600
    again = _executor(tmp_path)  # a restarted docktor keda answers what it had, not initial_replicas
    status = await again.status()
    assert (status.desired, status.running) == (7, 7)


@pytest.mark.parametrize("content", [b"not json", b'{"replicas": -3}', b'{"replicas": true}', b"{}"])
async def test_a_saved_count_that_is_not_a_count_is_an_executor_error(tmp_path: Path, content: bytes) -> None:
    executor = _executor(tmp_path)
    folder = tmp_path / "state" / "keda"
    folder.mkdir(mode=0o700)
    (folder / "worker.json").write_bytes(content)
    (folder / "worker.json").chmod(0o600)
    with pytest.raises(ExecutorError, match="does not hold a replica count"):
        await executor.status()


async def test_a_linked_state_file_is_refused(tmp_path: Path) -> None:
    executor = _executor(tmp_path)
    folder = tmp_path / "state" / "keda"
    folder.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"replicas": 40}')
    (folder / "worker.json").symlink_to(elsewhere)
    with pytest.raises(ExecutorError, match="cannot be read"):
        await executor.status()


def test_settings_name_the_scaled_object_and_need_a_starting_count() -> None:
    from pydantic import ValidationError

    assert KedaExecutor(KedaSettings(kind="keda", initial_replicas=1, scaled_object="jobs/worker"), Context("w", Path("/"), Path("/"))).target() == "jobs/worker"
    with pytest.raises(ValidationError, match="initial_replicas"):
        KedaSettings.model_validate({"kind": "keda"})
    with pytest.raises(ValidationError, match="scaled_object"):
        KedaSettings.model_validate({"kind": "keda", "initial_replicas": 1, "scaled_object": "no-namespace"})


# --------------------------------------------------------------------------- the current count
# Read from the workload's /scale on a STAND-IN Kubernetes API server (docktor.tools.testing.KubeStandIn:
# none can be installed here); the test plays the HPA by writing /scale as it does.

TOKEN = "keda-read-token-5b7e0c1a"
KEDA_EXAMPLE = REPO / "examples" / "kubernetes" / "docktor-keda.yaml"


def _reading(tmp_path: Path, server: KubeStandIn, token: str = TOKEN, **settings: object) -> KedaExecutor:
    """``executor: keda`` for ``worker`` in ScaledObject jobs/worker, reading Deployment worker's
    /scale through a kubeconfig naming ``server``."""
    write_kubeconfig(tmp_path / "kubeconfig", server.url, token)
    block = {"workload": "worker", "scaled_object": "jobs/worker", "kubeconfig": "kubeconfig", "request_timeout": 5} | settings
    return _executor(tmp_path, **block)


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
async def test_the_current_count_is_the_hpa_s_read_from_scale(tmp_path: Path, kind: str) -> None:
    """status() follows what the HPA set; scale() only changes what KEDA is told; nothing is written to the API."""
    with KubeStandIn({TOKEN: None, HPA_TOKEN: None}) as api:
        api.add_workload(kind, "worker", 2, namespace="jobs")
        executor = _reading(tmp_path, api, workload_kind=kind)  # the namespace is the ScaledObject's
        try:
            status = await executor.status()
            assert (status.desired, status.running, status.healthy) == (2, 2, True)
            assert status.detail == f"2 desired, 2 running: read from {kind}/worker/scale in namespace jobs (the HPA's view)"

            assert (await executor.scale(5)).ok
            status = await executor.status()  # the HPA has not synced yet
            assert (status.desired, status.running) == (2, 2) and status.detail.endswith("; 5 last asked of KEDA")

            await hpa_sets(api, 5, kind)
            status = await executor.status()
            assert (status.desired, status.running) == (5, 5) and "last asked" not in status.detail

            await hpa_sets(api, 4, kind)  # someone else's count (a kubectl scale, a KEDA fallback): still followed
            assert (await executor.status()).desired == 4
            assert executor.asked() == 5  # what KEDA is told stays Docktor's
        finally:
            await executor.close()
        # 4 reads by the executor, a read and a write per change by the HPA: the executor wrote nothing
        resource = f"{kind.lower()}s/scale"
        served = sorted((s.verb, s.resource, s.code) for s in api.served)
        assert served == [("get", resource, 200)] * 6 + [("update", resource, 200)] * 2


async def test_an_unreachable_api_falls_back_to_the_count_last_asked_for(tmp_path: Path) -> None:
    with KubeStandIn({TOKEN: None}) as api:
        api.add_workload("Deployment", "worker", 2, namespace="jobs")
    executor = _reading(tmp_path, api)  # its server is gone: the port is closed
    try:
        assert (await executor.scale(6)).ok
        status = await executor.status()
    finally:
        await executor.close()
    assert (status.desired, status.running, status.healthy) == (6, 6, False)
    assert status.detail.startswith("6, the count last asked of KEDA: the current count cannot be read (")
    assert f"cannot reach the Kubernetes API at {api.url}" in status.detail and "\n" not in status.detail


@pytest.mark.parametrize(("token", "says"), [
    ("read-nothing-token-3d8a", '403 deployments.apps is forbidden: User "system:serviceaccount:jobs:docktor" cannot get resource '
                  '"deployments/scale" in API group "apps" in the namespace "jobs" — the service account lacks a permission '
                  "(see examples/kubernetes/docktor-keda.yaml)"),
    ("not-a-known-token", "401 Unauthorized — the credentials were refused (an expired token?)"),
])
async def test_a_refused_read_falls_back_saying_why_and_naming_no_secret(tmp_path: Path, token: str, says: str) -> None:
    with KubeStandIn({TOKEN: None, "read-nothing-token-3d8a": {("apps", "deployments", "get")}}) as api:
        api.add_workload("Deployment", "worker", 2, namespace="jobs")
        executor = _reading(tmp_path, api, token=token)
        try:
            status = await executor.status()  # nothing asked yet: initial_replicas
        finally:
            await executor.close()
        assert (status.desired, status.running, status.healthy) == (2, 2, False)
        assert status.detail.startswith("2, initial_replicas (nothing asked of KEDA yet): the current count cannot be read (")
        assert says in status.detail and "\n" not in status.detail and token not in status.detail
        assert [(s.verb, s.resource) for s in api.served] == [("get", "deployments/scale")]  # a 4xx is an answer: not retried


async def test_a_missing_workload_or_credentials_fall_back_too(tmp_path: Path) -> None:
    with KubeStandIn({TOKEN: None}) as api:
        api.add_workload("Deployment", "worker", 2, namespace="queues")  # not where the ScaledObject is
        executor = _reading(tmp_path, api)
        try:
            status = await executor.status()
        finally:
            await executor.close()
    assert not status.healthy and status.desired == 2
    assert '404 deployments.apps "worker" not found — no Deployment/worker in namespace jobs' in status.detail

    (tmp_path / "other").mkdir()
    absent = _executor(tmp_path / "other", workload="worker", kubeconfig="absent")
    status = await absent.status()
    assert not status.healthy and f"kubeconfig {tmp_path / 'other' / 'absent'} does not exist" in status.detail
    # validate says so as a warning, not an error: the executor works without the API
    assert KedaExecutor.check(absent.settings, absent.context) == [
        f"kubeconfig {tmp_path / 'other' / 'absent'} does not exist (set kubeconfig: or KUBECONFIG, or run inside a cluster): "
        "the current count will be the one last asked of KEDA"]
    assert KedaExecutor.check(_executor(tmp_path).settings, absent.context) == []  # no workload named: nothing to find


async def test_the_example_role_grants_exactly_what_the_read_uses(tmp_path: Path) -> None:
    """examples/kubernetes/docktor-keda.yaml's Role: every request status() makes is allowed, and
    every verb it grants was used (a get on deployments/scale; no write, no list)."""
    granted = role_rights(KEDA_EXAMPLE)
    with KubeStandIn({TOKEN: granted}) as api:
        api.add_workload("Deployment", "worker", 3, namespace="jobs")
        executor = _reading(tmp_path, api)
        try:
            assert (await executor.status()).desired == 3
            assert (await executor.scale(4)).ok
            assert (await executor.status()).healthy
        finally:
            await executor.close()
        assert not [s for s in api.served if s.code in (401, 403)]
        assert api.used() == granted == {("apps", "deployments/scale", "get")}


def test_settings_share_the_kubernetes_executor_s_names() -> None:
    from pydantic import ValidationError

    settings = KedaSettings.model_validate({"kind": "keda", "initial_replicas": 1, "scaled_object": "jobs/worker", "workload": "worker"})
    assert KedaExecutor.describe(settings) == "keda jobs/worker (reads Deployment jobs/worker/scale)"
    assert KedaExecutor.describe(settings.model_copy(update={"workload": None})) == "keda jobs/worker"
    with pytest.raises(ValidationError, match="workload"):
        KedaSettings.model_validate({"kind": "keda", "initial_replicas": 1, "workload": "Not_A_Name"})
    with pytest.raises(ValidationError, match="workload_kind"):
        KedaSettings.model_validate({"kind": "keda", "initial_replicas": 1, "workload": "w", "workload_kind": "DaemonSet"})


async def test_the_daemon_waits_for_the_read_and_its_fallback(tmp_path: Path) -> None:
    """The daemon's bound on status() is never shorter than request_timeout (plus a second): a
    silent API ends in the fallback's reason, not in "no status"."""
    from docktor.agent.config.load import load_config
    from docktor.agent.runtime.supervisor import Supervisor

    (tmp_path / "docktor.yaml").write_text(
        "state_dir: state\nservices:\n  - {name: worker, executor: keda, initial_replicas: 1, workload: worker,\n"
        "     kubeconfig: absent, request_timeout: 3s, check_interval: 0.5s, min_replicas: 1, max_replicas: 4, policy: rules}\n")
    daemon = Supervisor(load_config(tmp_path / "docktor.yaml"))
    await daemon.open()
    try:
        loop = daemon.loops["worker"]
        assert loop.status_bound == 4.0
        record = await loop.tick()
        assert record.current_replicas == 1 and [e for e in record.errors if "the current count cannot be read (kubeconfig " in e]
    finally:
        await daemon.close()
