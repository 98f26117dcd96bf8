"""One Kubernetes workload as an executor reaches it: its credentials (found as kubectl finds them,
:mod:`.kubernetes_config`), its namespace, one API client made on first use
(:mod:`.kubernetes_api`), and one line for what the API refused.

Shared by ``executor: kubernetes`` (which scales the workload) and ``executor: keda`` (which only
reads its ``/scale`` subresource for the current count), so both find the same server, namespace
and token the same way, and say the same things when they cannot.
"""

from __future__ import annotations

from pathlib import Path

from docktor.tools.executors.kubernetes_api import ApiError, KubeApi
from docktor.tools.executors.kubernetes_config import Credentials, WorkloadSettings, load_credentials
from docktor.tools.sdk import Context, ExecutorError


class WorkloadAccess:
    """The API of one Deployment or StatefulSet named by :class:`WorkloadSettings`."""

    def __init__(self, settings: WorkloadSettings, context: Context, name: str, *, rbac: str, namespace: str | None = None) -> None:
        self.settings = settings
        self.context = context
        self.kind = settings.workload_kind
        self.name = name
        #: the Role that grants what the executor calls, named when the API answers 403
        self.rbac = rbac
        #: the namespace to use when the settings name none, before the credentials' own
        self.fallback_namespace = namespace
        self.kubeconfig: Path | None = context.path(settings.kubeconfig) if settings.kubeconfig is not None else None
        self._api: KubeApi | None = None

    @staticmethod
    def check(settings: WorkloadSettings, context: Context) -> list[str]:
        """Why the credentials cannot be found or read, if they cannot (no request is made: the
        config may be for another machine)."""
        try:
            load_credentials(context.path(settings.kubeconfig) if settings.kubeconfig else None, settings.context)
        except ExecutorError as e:
            return [str(e)]
        return []

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def credentials(self) -> Credentials:
        return load_credentials(self.kubeconfig, self.settings.context)

    def namespace(self, credentials: Credentials) -> str:
        return self.settings.namespace or self.fallback_namespace or credentials.namespace or "default"

    def target(self) -> str:
        """The API server, namespace, kind and name, whichever config names them."""
        try:
            credentials = self.credentials()
        except ExecutorError:
            return (f"{self.kubeconfig or 'default credentials'}/{self.settings.context or ''}/"
                    f"{self.settings.namespace or self.fallback_namespace or ''}/{self.label}")
        return f"{credentials.server}/{self.namespace(credentials)}/{self.label}"

    def api(self) -> KubeApi:
        """The client, made on first use (:class:`ExecutorError` when the credentials cannot be read)."""
        if self._api is None:
            credentials = self.credentials()
            self._api = KubeApi(credentials, self.namespace(credentials), self.context, self.settings.request_timeout)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            api, self._api = self._api, None
            await api.close()

    def explain(self, e: ApiError, namespace: str) -> str:
        """One line for a 4xx, saying what to do about it."""
        hints = {
            401: "the credentials were refused (an expired token?)",
            403: f"the service account lacks a permission (see {self.rbac})",
            404: f"no {self.label} in namespace {namespace} (or its API is not served)",
            409: "changed by someone else meanwhile",
        }
        hint = hints.get(e.code)
        return f"{e}{f' — {hint}' if hint else ''}"
