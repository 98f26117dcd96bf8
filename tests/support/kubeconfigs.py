"""Credentials for the Kubernetes-reading executors' tests (``kubernetes``, ``keda``), pointing at a
stand-in API server (:class:`docktor.tools.testing.KubeStandIn`): a kubeconfig file, and a service
account's mounted folder, as kubectl and the kubelet write them; and the rights an example's Role
grants, to compare with what the stand-in served."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import yaml

from docktor.tools.testing.kube_standin import KubeStandIn, Right


def write_kubeconfig(
    path: Path, server: str, token: str | None = None, *, ca: Path | None = None, namespace: str | None = None,
    context: str = "test", more_contexts: Mapping[str, str] | None = None, user: Mapping[str, Any] | None = None,
) -> Path:
    """A kubeconfig (JSON is YAML) with one cluster at ``server`` (its CA inline, base64, as
    ``kubectl config view --raw`` shows it), one user with ``token`` (or the ``user`` mapping), the
    context ``context`` current, and ``more_contexts`` (name -> namespace) on the same cluster."""
    cluster: dict[str, Any] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    contexts = [{"name": context, "context": {"cluster": "standin", "user": "docktor", **({"namespace": namespace} if namespace else {})}}]
    contexts += [{"name": name, "context": {"cluster": "standin", "user": "docktor", "namespace": ns}} for name, ns in (more_contexts or {}).items()]
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "standin", "cluster": cluster}],
        "users": [{"name": "docktor", "user": dict(user) if user is not None else ({"token": token} if token else {})}],
        "contexts": contexts,
    }
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


def write_service_account(folder: Path, token: str, ca: Path, namespace: str) -> Path:
    """The folder the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_bytes(ca.read_bytes())
    (folder / "namespace").write_text(namespace)
    return folder


def role_rights(path: Path) -> set[Right]:
    """Every (api group, resource, verb) the Role in the manifest ``path`` grants."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


#: the token a test's HPA writes /scale with (the stand-in grants it everything: None)
HPA_TOKEN = "hpa-controller-token"


async def hpa_sets(api: KubeStandIn, replicas: int, kind: str = "Deployment") -> None:
    """What the HPA does at a sync: read the workload ``jobs/worker``'s /scale, write spec.replicas
    back with its resourceVersion."""
    path = f"{api.url}/apis/apps/v1/namespaces/jobs/{kind.lower()}s/worker/scale"
    auth = {"authorization": f"Bearer {HPA_TOKEN}"}
    async with httpx2.AsyncClient(timeout=5) as client:
        scale = (await client.get(path, headers=auth)).json()
        scale["spec"]["replicas"] = replicas
        assert (await client.put(path, json=scale, headers=auth)).status_code == 200
