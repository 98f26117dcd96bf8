"""The handful of Kubernetes API calls the executor makes, over the SDK's HTTP client.

Each call is bounded (the client's timeout per phase) and retried through the SDK's
:func:`retrying`: a connection that fails, a time-out, a 429 or a 5xx answer is tried again; a
4xx answer is an answer (:class:`ApiError` with its code: 409 conflict, 403 forbidden, 404 not
found), never retried here. The executor decides what a 409 means (re-read, then try again).

The paths and content types are the API's documented ones: the ``/scale`` subresource of
``apps/v1`` Deployments and StatefulSets (``autoscaling/v1`` Scale; a merge patch that carries
``metadata.resourceVersion`` is refused with 409 when the object changed since it was read), pods
listed by label selector and patched with ``application/merge-patch+json``, ``autoscaling/v2``
HorizontalPodAutoscalers, KEDA's ``keda.sh/v1alpha1`` ScaledObjects (404 when the CRD is not
installed) and ``metrics.k8s.io/v1beta1`` PodMetrics.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2

from docktor.tools.executors.kubernetes_config import Credentials
from docktor.tools.sdk import Context, ExecutorError, SourceError, Transient, http_client, reason, retrying, scrub

MERGE_PATCH = "application/merge-patch+json"
#: what each workload kind is called in the API's paths
RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


class ApiError(ExecutorError):
    """The API server answered a 4xx: ``code`` and its own message (it names no credential)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class KubeApi:
    """One API server, one namespace, one client with its connections."""

    def __init__(self, credentials: Credentials, namespace: str, context: Context, timeout: float) -> None:
        self.credentials = credentials
        self.namespace = namespace
        self.timeout = timeout
        self._client = http_client(credentials.tls, context, timeout)

    async def close(self) -> None:
        await self._client.aclose()

    # ----------------------------------------------------------------- one call

    async def call(self, method: str, path: str, *, params: dict[str, str] | None = None, patch: Any = None) -> Any:
        """The JSON answer of ``method path``; :class:`ApiError` for a 4xx, :class:`ExecutorError`
        when every attempt failed to get an answer."""
        try:
            return await retrying(lambda: self._once(method, path, params, patch), deadline=self.timeout)
        except SourceError as e:  # retrying's Unavailable: the last attempt's line
            raise ExecutorError(str(e)) from None

    async def _once(self, method: str, path: str, params: dict[str, str] | None, patch: Any) -> Any:
        headers = {"accept": "application/json"}
        token = self.credentials.token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        content = None
        if patch is not None:
            headers["content-type"] = MERGE_PATCH
            content = json.dumps(patch).encode()
        where = f"Kubernetes API at {self.credentials.server}"
        try:
            response = await self._client.request(method, self.credentials.server + path, params=params, headers=headers, content=content)
        except httpx2.TimeoutException:
            raise Transient(f"{where}: no answer within {self.timeout:g}s ({method} {path})") from None
        except httpx2.HTTPError as e:
            raise Transient(f"cannot reach the {where}: {reason(e)}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(f"{where}: {method} {path}: {response.status_code} {said(response)}")
        if response.status_code >= 400:
            raise ApiError(response.status_code, f"{where}: {method} {path}: {response.status_code} {said(response)}")
        try:
            return response.json()
        except ValueError:
            raise ExecutorError(f"{where}: {method} {path}: the answer is not JSON") from None

    # ----------------------------------------------------------------- the calls

    def workload_path(self, kind: str, name: str) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/{RESOURCES[kind]}/{name}"

    async def workload(self, kind: str, name: str) -> dict[str, Any]:
        """The Deployment or StatefulSet (its spec and status)."""
        return mapping(await self.call("GET", self.workload_path(kind, name)), f"{kind} {name}")

    async def scale(self, kind: str, name: str) -> dict[str, Any]:
        """Its ``/scale`` subresource: ``spec.replicas``, ``status.selector``, ``metadata.resourceVersion``."""
        return mapping(await self.call("GET", self.workload_path(kind, name) + "/scale"), f"{kind} {name}/scale")

    async def set_replicas(self, kind: str, name: str, replicas: int, resource_version: str) -> dict[str, Any]:
        """Patch ``spec.replicas`` through ``/scale``, only if the object is still at ``resource_version``
        (else :class:`ApiError` 409)."""
        patch = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        return mapping(await self.call("PATCH", self.workload_path(kind, name) + "/scale", patch=patch), f"{kind} {name}/scale")

    async def pods(self, selector: str) -> list[dict[str, Any]]:
        """The pods the label ``selector`` matches."""
        answer = await self.call("GET", f"/api/v1/namespaces/{self.namespace}/pods", params={"labelSelector": selector})
        return items(answer, "pods")

    async def annotate(self, pod: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into the pod's own (other annotations are kept)."""
        await self.call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod}", patch={"metadata": {"annotations": annotations}})

    async def autoscalers(self) -> list[dict[str, Any]]:
        """The namespace's HorizontalPodAutoscalers."""
        answer = await self.call("GET", f"/apis/autoscaling/v2/namespaces/{self.namespace}/horizontalpodautoscalers")
        return items(answer, "horizontalpodautoscalers")

    async def scaled_objects(self) -> list[dict[str, Any]]:
        """The namespace's KEDA ScaledObjects; none when KEDA's CRD is not installed (404)."""
        try:
            answer = await self.call("GET", f"/apis/keda.sh/v1alpha1/namespaces/{self.namespace}/scaledobjects")
        except ApiError as e:
            if e.code == 404:
                return []
            raise
        return items(answer, "scaledobjects")

    async def pod_metrics(self, selector: str) -> list[dict[str, Any]]:
        """The PodMetrics (``metrics.k8s.io``) of the pods ``selector`` matches."""
        answer = await self.call("GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{self.namespace}/pods", params={"labelSelector": selector})
        return items(answer, "pod metrics")


def said(response: httpx2.Response) -> str:
    """What an error answer says: a ``Status`` object's ``message`` (scrubbed, cut), else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    text = message if isinstance(message, str) and message.strip() else response.reason_phrase
    return scrub(text)[:300]


def mapping(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ExecutorError(f"the Kubernetes API answered {what} with something that is not an object")
    return answer


def items(answer: Any, what: str) -> list[dict[str, Any]]:
    listed = mapping(answer, what).get("items")
    if not isinstance(listed, list):
        raise ExecutorError(f"the Kubernetes API's list of {what} has no items")
    return [i for i in listed if isinstance(i, dict)]


# --------------------------------------------------------------------------- quantities

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    None: 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


def quantity(text: Any) -> float | None:
    """A Kubernetes resource quantity (``250m``, ``123456n``, ``64Mi``, ``1.5``) as a number; None
    when it is not one (a value that cannot be read is missing, never zero)."""
    m = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    return None if m is None else float(m.group(1)) * _SUFFIX[m.group(2)]
