"""examples/kubernetes (the KEDA side): every Docktor config there passes ``docktor validate``, and
the manifests agree with them and with ``docktor keda``: each ScaledObject's trigger names a
service of its config under ``executor: keda``, with the same bounds; its HPA behavior leaves the
timing to Docktor; its scalerAddress is the Service in front of the Deployment, whose arguments
are options ``docktor keda`` has and serve TLS with client certificates.

No Kubernetes API server or KEDA can run on these machines: what a cluster would do with the
manifests is not tried here (examples/kubernetes/README.md says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import docktor
from tests.support.kubeconfigs import write_kubeconfig
from tests.support.peers import REPO

EXAMPLE = REPO / "examples" / "kubernetes"
#: each ScaledObject file, and the Docktor config whose service it names
PAIRS = {"scaledobject.yaml": "docktor-nats.yaml", "scaledobject-rabbitmq.yaml": "docktor-rabbitmq.yaml"}


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]


def one(name: str, kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents(name) if d["kind"] == kind]
    return found


@pytest.mark.parametrize("config", sorted(PAIRS.values()))
def test_the_docktor_configs_validate(config: str, tmp_path: Path) -> None:
    """With credentials to find (in the pod, its service account; here a kubeconfig: no request is
    made) not a word; without any, still valid, with one warning: the count falls back."""
    env: dict[str, str | None] = {"RABBITMQ_USER": "reader", "RABBITMQ_PASSWORD": "secret", "KUBERNETES_SERVICE_HOST": None,
                                  "HOME": str(tmp_path)}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:6443", "token-never-sent")
    done = docktor("validate", "--config", str(EXAMPLE / config), env=env | {"KUBECONFIG": str(kubeconfig)})
    assert done.returncode == 0, done.stderr
    assert " keda jobs/" in done.stdout and "/scale" in done.stdout and "ok: 1 service(s), mode autonomous" in done.stdout
    assert not done.stderr.strip(), done.stderr

    alone = docktor("validate", "--config", str(EXAMPLE / config), env=env | {"KUBECONFIG": None})
    assert alone.returncode == 0, alone.stderr
    (line,) = alone.stderr.strip().splitlines()
    assert line.endswith(f"{tmp_path / '.kube' / 'config'} does not exist (set kubeconfig: or KUBECONFIG, or run inside a cluster): "
                         "the current count will be the one last asked of KEDA"), line


@pytest.mark.parametrize(("scaled", "config"), sorted(PAIRS.items()))
def test_each_scaled_object_asks_docktor_for_a_keda_service_with_its_bounds(scaled: str, config: str) -> None:
    obj = one(scaled, "ScaledObject")
    (trigger,) = obj["spec"]["triggers"]
    assert trigger["type"] in ("external", "external-push")
    (svc,) = [s for s in yaml.safe_load((EXAMPLE / config).read_text())["services"] if s["name"] == trigger["metadata"]["service"]]
    assert svc["executor"] == "keda" and svc["scaled_object"] == f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
    assert (obj["spec"]["minReplicaCount"], obj["spec"]["maxReplicaCount"]) == (svc["min_replicas"], svc["max_replicas"])

    service = one("docktor-keda.yaml", "Service")
    (port,) = service["spec"]["ports"]
    assert trigger["metadata"]["scalerAddress"] == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port['port']}"

    # the HPA's own timing out of the way: no stabilization, any step within one period
    behavior = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == behavior["scaleDown"]["stabilizationWindowSeconds"] == 0
    assert [(p["type"], p["value"]) for p in behavior["scaleUp"]["policies"]] == [("Pods", svc["max_replicas"])]
    assert [(p["type"], p["value"]) for p in behavior["scaleDown"]["policies"]] == [("Percent", 100)]


def test_the_deployment_runs_docktor_keda_over_tls_with_client_certificates() -> None:
    deployment = one("docktor-keda.yaml", "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "keda"
    options = dict(a.split("=", 1) for a in args[1:])
    assert set(options) == {"--config", "--listen", "--tls-cert", "--tls-key", "--tls-client-ca"}
    shown = docktor("keda", "--help", env={"COLUMNS": "300"})
    assert shown.returncode == 0 and all(option in shown.stdout for option in options)
    assert options["--listen"] == f"0.0.0.0:{container['ports'][0]['containerPort']}"

    kustomization = documents("kustomization.yaml")[0]
    (generated,) = kustomization["configMapGenerator"]
    (file,) = generated["files"]
    name, source = file.split("=")
    assert Path(options["--config"]).name == name and (EXAMPLE / source).is_file()
    assert set(kustomization["resources"]) <= {p.name for p in EXAMPLE.iterdir()}
