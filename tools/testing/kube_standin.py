"""A STAND-IN for the Kubernetes API server: no real one can be installed on the machines Docktor
is tested on (none in PyPI, Debian or npm), so the Kubernetes executor is tested against this.

It is a real HTTP server on loopback (threads; TLS when given a certificate) that implements the
documented semantics of exactly the endpoints the executor uses, and nothing else:

* ``apps/v1`` Deployments and StatefulSets: ``GET`` the object; its ``/scale`` subresource
  (``autoscaling/v1`` Scale) by ``GET``, ``PATCH`` (``application/merge-patch+json`` or
  ``application/strategic-merge-patch+json``) and ``PUT``. Every write bumps the
  ``resourceVersion``; a write carrying a stale one is refused with ``409 Conflict``;
* pods: list by ``labelSelector`` (equality terms), ``GET`` one, merge-patch one (annotations);
* ``autoscaling/v2`` HorizontalPodAutoscalers and ``keda.sh/v1alpha1`` ScaledObjects: list (the
  latter 404 when the test says KEDA's CRD is absent);
* ``metrics.k8s.io/v1beta1`` PodMetrics: list by ``labelSelector`` (404 when switched off).

Bearer tokens (or, with ``client_ca``, a client certificate it signed, known as ``cert:<its CN>``):
an unknown or missing one is ``401``; a token may be limited to a set of
``(api group, resource, verb)`` rights (an RBAC Role's rules), and a request outside them is
``403`` with the API's wording. Errors are ``Status`` objects. Every request is recorded as
``(verb, group, resource, code)``, verbs as RBAC names them (``get``, ``list``, ``patch``,
``update``), so a test can compare what was used with what a Role grants.

Deleted pods stay terminating (listed with a ``deletionTimestamp``) for ``terminate_after`` seconds.
What it does not do: watches, any other resource or patch type (415), field selectors, set-based
label selectors, anything running in a pod.
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.tools.testing.kube_cluster import Cluster, PodState, WorkloadState, merge_patch

PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
#: (api group, resource, verb): an RBAC rule's unit
Right = tuple[str, str, str]

_ROUTES = [
    (re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/(deployments|statefulsets)/([^/]+)(/scale)?$"), "workload"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$"), "pods"),
    (re.compile(r"^/apis/autoscaling/v2/namespaces/([^/]+)/horizontalpodautoscalers$"), "hpas"),
    (re.compile(r"^/apis/keda\.sh/v1alpha1/namespaces/([^/]+)/scaledobjects$"), "scaledobjects"),
    (re.compile(r"^/apis/metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/pods$"), "podmetrics"),
]
_GROUPS = {"workload": "apps", "pods": "", "hpas": "autoscaling", "scaledobjects": "keda.sh", "podmetrics": "metrics.k8s.io"}
_KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet"}


@dataclass(frozen=True)
class Served:
    """One request the stand-in answered."""

    verb: str
    group: str
    resource: str
    code: int


class ApiFailure(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class KubeStandIn:
    """The stand-in API server; ``with KubeStandIn(tokens={...}) as api: ...``."""

    def __init__(
        self,
        tokens: Mapping[str, Collection[Right] | None],
        *,
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
        ready_after: float = 0.3,
        terminate_after: float = 0.0,
        keda_crd: bool = True,
        metrics_api: bool = True,
    ) -> None:
        #: token -> the rights it has (None: all)
        self.tokens = dict(tokens)
        self.keda_crd = keda_crd
        self.metrics_api = metrics_api
        self.lock = threading.RLock()
        self.cluster = Cluster(ready_after, terminate_after)
        self.served: list[Served] = []
        #: (kind, name) -> [writes left to precede by another writer's, the replicas it sets]
        self._conflicts: dict[tuple[str, str], list[Any]] = {}
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            if client_ca is not None:  # a client certificate signed by it authenticates as "cert:<its CN>"
                context.verify_mode = ssl.CERT_OPTIONAL
                context.load_verify_locations(cafile=str(client_ca))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"kube-standin:{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> KubeStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- what a test scripts

    def add_workload(self, kind: str, name: str, replicas: int = 1, namespace: str = "default", waiting: str | None = None) -> WorkloadState:
        with self.lock:
            return self.cluster.add_workload(kind, name, replicas, namespace, waiting)

    def workload(self, kind: str, name: str, namespace: str = "default") -> WorkloadState:
        return self.cluster.workloads[(namespace, kind, name)]

    def add_hpa(self, name: str, target_kind: str, target: str, namespace: str = "default") -> None:
        with self.lock:
            self.cluster.hpas[(namespace, name)] = {"apiVersion": "apps/v1", "kind": target_kind, "name": target}

    def add_scaled_object(self, name: str, target: str, namespace: str = "default", target_kind: str | None = None) -> None:
        ref = {"name": target} | ({"kind": target_kind, "apiVersion": "apps/v1"} if target_kind else {})
        with self.lock:
            self.cluster.scaled_objects[(namespace, name)] = ref

    def concurrent_write(self, kind: str, name: str, replicas: int | None = None, times: int = 1) -> None:
        """Before each of the next ``times`` scale writes to this workload, another client writes
        it first (bumping its resourceVersion, and setting ``replicas`` when given)."""
        with self.lock:
            self._conflicts[(kind, name)] = [times, replicas]

    def used(self) -> set[Right]:
        """The rights the requests served so far needed (those refused 401/403 excluded)."""
        with self.lock:
            return {(s.group, s.resource, s.verb) for s in self.served if s.code not in (401, 403)}

    # ----------------------------------------------------------------- serving

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._answer(self, "GET")

            def do_PATCH(self) -> None:
                owner._answer(self, "PATCH")

            def do_PUT(self) -> None:
                owner._answer(self, "PUT")

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _answer(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        served: Served | None = None
        try:
            route, match = self._route(url.path)
            verb, group, resource = self._rbac(method, route, match)
            served = Served(verb, group, resource, 0)
            self._authorize(request.headers.get("authorization"), _peer(request), verb, group, resource, match)
            with self.lock:
                code, answer = self._serve(method, route, match, query, body, request.headers.get("content-type") or "")
        except ApiFailure as e:
            code, answer = e.code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": e.message, "reason": e.reason, "code": e.code}
        if served is not None:
            with self.lock:
                self.served.append(Served(served.verb, served.group, served.resource, code))
        data = json.dumps(answer).encode()
        request.send_response(code)
        for header, value in (("content-type", "application/json"), ("content-length", str(len(data)))):
            request.send_header(header, value)
        request.end_headers()
        request.wfile.write(data)

    def _route(self, path: str) -> tuple[str, re.Match[str]]:
        for pattern, route in _ROUTES:
            if m := pattern.match(path):
                return route, m
        raise ApiFailure(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _rbac(method: str, route: str, m: re.Match[str]) -> tuple[str, str, str]:
        """The RBAC verb, group and resource a request needs."""
        if route == "workload":
            resource = m.group(2) + ("/scale" if m.group(4) else "")
            named = True
        else:
            resource = {"pods": "pods", "hpas": "horizontalpodautoscalers", "scaledobjects": "scaledobjects", "podmetrics": "pods"}[route]
            named = route == "pods" and m.group(2) is not None
        verb = {"GET": "get" if named else "list", "PATCH": "patch", "PUT": "update"}[method]
        return verb, _GROUPS[route], resource

    def _authorize(self, header: str | None, peer: str | None, verb: str, group: str, resource: str, m: re.Match[str]) -> None:
        token = header[len("Bearer "):] if header and header.startswith("Bearer ") else peer
        if token is None or token not in self.tokens:
            raise ApiFailure(401, "Unauthorized", "Unauthorized")
        rights = self.tokens[token]
        if rights is not None and (group, resource, verb) not in rights:
            shown = f"{resource.split('/')[0]}.{group}" if group else resource.split("/")[0]
            raise ApiFailure(403, "Forbidden", (
                f'{shown} is forbidden: User "system:serviceaccount:{m.group(1)}:docktor" cannot {verb} resource '
                f'"{resource}" in API group "{group}" in the namespace "{m.group(1)}"'))

    def _serve(self, method: str, route: str, m: re.Match[str], query: dict[str, str], body: bytes, content_type: str) -> tuple[int, Any]:
        namespace = m.group(1)
        if route == "workload":
            return self._workload(method, namespace, _KINDS[m.group(2)], m.group(3), bool(m.group(4)), body, content_type)
        if route == "pods":
            return self._pods(method, namespace, m.group(2), query, body, content_type)
        if route == "hpas":
            return 200, self.cluster.targets_json("HorizontalPodAutoscaler", "autoscaling/v2", self.cluster.hpas, namespace)
        if route == "scaledobjects":
            if not self.keda_crd:
                raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
            return 200, self.cluster.targets_json("ScaledObject", "keda.sh/v1alpha1", self.cluster.scaled_objects, namespace)
        if not self.metrics_api:
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        matching = self.cluster.pods_matching(namespace, query.get("labelSelector", ""))
        items = [self._pod_metrics(namespace, p) for _, p in matching if p.deleted_at is None]
        return 200, {"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetricsList", "metadata": {}, "items": items}

    def _workload(self, method: str, namespace: str, kind: str, name: str, scale: bool, body: bytes, content_type: str) -> tuple[int, Any]:
        w = self.cluster.workloads.get((namespace, kind, name))
        plural = f"{kind.lower()}s.apps"
        if w is None:
            raise ApiFailure(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, self.cluster.scale_json(w) if scale else self.cluster.workload_json(w)
        if not scale:
            raise ApiFailure(405, "MethodNotAllowed", "the stand-in writes workloads only through /scale")
        if method == "PATCH" and content_type.split(";")[0].strip() not in PATCH_TYPES:
            raise ApiFailure(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}")
        sent = _json(body)
        if method == "PATCH":
            merged = merge_patch(self.cluster.scale_json(w), sent)
        else:
            merged = sent
        self._foreign_write(w)
        given = (merged.get("metadata") or {}).get("resourceVersion")
        if given is not None and str(given) != str(w.version) and (method == "PUT" or "resourceVersion" in (sent.get("metadata") or {})):
            raise ApiFailure(409, "Conflict", (f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                                               "please apply your changes to the latest version and try again"))
        replicas = (merged.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiFailure(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0')
        w.replicas, w.version = replicas, self.cluster.bump()
        self.cluster.reconcile(w)
        return 200, self.cluster.scale_json(w)

    def _foreign_write(self, w: WorkloadState) -> None:
        pending = self._conflicts.get((w.kind, w.name))
        if pending and pending[0] > 0:
            pending[0] -= 1
            if pending[1] is not None:
                w.replicas = pending[1]
                self.cluster.reconcile(w)
            w.version = self.cluster.bump()

    def _pods(self, method: str, namespace: str, name: str | None, query: dict[str, str], body: bytes, content_type: str) -> tuple[int, Any]:
        now = time.time()
        if name is None:
            items = [p.as_json(namespace, now) for _, p in self.cluster.pods_matching(namespace, query.get("labelSelector", ""))]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": str(self.cluster.bump())}, "items": items}
        pod = self.cluster.pod(namespace, name)
        if pod is None:
            raise ApiFailure(404, "NotFound", f'pods "{name}" not found')
        if method == "PATCH":
            if content_type.split(";")[0].strip() not in PATCH_TYPES:
                raise ApiFailure(415, "UnsupportedMediaType", f"accepted media types include: {', '.join(PATCH_TYPES)}")
            patch = (_json(body).get("metadata") or {}).get("annotations")
            if isinstance(patch, dict):
                pod.annotations = {k: str(v) for k, v in merge_patch(pod.annotations, patch).items()}
            pod.version = self.cluster.bump()
        elif method != "GET":
            raise ApiFailure(405, "MethodNotAllowed", "the stand-in only reads and patches pods")
        return 200, pod.as_json(namespace, now)

    @staticmethod
    def _pod_metrics(namespace: str, pod: PodState) -> dict[str, Any]:
        return {
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
            "metadata": {"name": pod.name, "namespace": namespace}, "timestamp": "", "window": "15s",
            "containers": [{"name": "worker", "usage": {"cpu": f"{round(pod.cpu * 1e9)}n", "memory": f"{round(pod.memory / 1024)}Ki"}}],
        }


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise ApiFailure(400, "BadRequest", "the request body is not JSON") from None
    if not isinstance(value, dict):
        raise ApiFailure(400, "BadRequest", "the request body is not a JSON object")
    return value


def _peer(request: http.server.BaseHTTPRequestHandler) -> str | None:
    """``cert:<CN>`` of the verified client certificate the connection presented, if any."""
    getpeercert = getattr(request.connection, "getpeercert", None)
    cert = getpeercert() if getpeercert is not None else None
    names = [value for rdn in (cert or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
    return f"cert:{names[0]}" if names else None
