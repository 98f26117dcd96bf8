"""The Kubernetes executor's settings, and where it finds its API server and its credentials, as
kubectl does.

Two ways, in this order:

* a kubeconfig: the ``kubeconfig:`` setting, else (outside a cluster) ``$KUBECONFIG`` (its first
  file) or ``~/.kube/config``; the ``context:`` setting, else the file's ``current-context``. The
  cluster's ``server`` and CA (``certificate-authority`` or ``-data``), the user's ``token``,
  ``tokenFile`` or client certificate (``client-certificate``/``client-key``, or ``-data``);
* in a pod, the service account: ``KUBERNETES_SERVICE_HOST``/``_PORT``, and the token, CA and
  namespace the kubelet mounts in :data:`SERVICE_ACCOUNT_DIR`. The token is read again before each
  request, since the kubelet rotates projected tokens in place.

What Docktor refuses rather than half-supports, each with one line: ``insecure-skip-tls-verify``
(the server is always verified), ``exec`` and ``auth-provider`` users (a cloud CLI run for a
token; give the executor a service-account token instead), basic auth.

A token is a secret: :class:`Credentials` never shows it (``repr`` included), and no message here
quotes a kubeconfig's values, only the file, the context and the key that is wrong.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationInfo, field_validator

from docktor.tools.sdk import ExecutorError, PluginSettings, PositiveSeconds, one_line
from docktor.tools.sdk.safe_yaml import YAMLTooBig, load_yaml

#: where the kubelet mounts a pod's service account
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


#: a DNS-1123 label (namespaces) and subdomain (object names): what the API accepts, and safe in a path
_NAMES = {
    "namespace": (re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"), "namespace name (lower-case letters, digits and '-')"),
    "workload": (re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"), "object name (lower-case letters, digits, '-' and '.')"),
}


class WorkloadSettings(PluginSettings):
    """Where one Deployment or StatefulSet is, and how to reach its API server: the settings
    ``executor: kubernetes`` (which scales it) and ``executor: keda`` (which only reads its
    ``/scale``) share."""

    #: the workload's kind: a Deployment (default) or a StatefulSet
    workload_kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    #: its name (each executor says what None means)
    workload: str | None = None
    #: its namespace; default: the kubeconfig context's or the service account's, else "default"
    namespace: str | None = None
    #: a kubeconfig file (relative to the config file); default: in a pod, its service account,
    #: else $KUBECONFIG or ~/.kube/config
    kubeconfig: Path | None = None
    #: the kubeconfig's context; default: its current-context
    context: str | None = None
    #: bound on each API request (retries come on top, within the same bound)
    request_timeout: PositiveSeconds = 10.0

    @field_validator("workload", "namespace")
    @classmethod
    def _kubernetes_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, what = _NAMES[info.field_name or ""]
        if value is not None and not pattern.match(value):
            raise ValueError(f"must be a Kubernetes {what}")
        return value


class KubernetesSettings(WorkloadSettings):
    """``executor: kubernetes``: one Deployment or StatefulSet (``workload`` default: the service's name)."""

    kind: Literal["kubernetes"]
    #: how long to wait for the pods to be ready before calling the scale an error
    scale_timeout: PositiveSeconds = 120.0


@dataclass(frozen=True)
class Credentials:
    """An API server, how to trust it, and who to be there."""

    #: ``https://host:port`` (no path, no user-info)
    server: str
    #: verifies the server (a kubeconfig's or the service account's CA; the system's otherwise)
    tls: ssl.SSLContext | None
    #: where these came from, for messages: ``kubeconfig ~/.kube/config, context prod``
    source: str
    #: the namespace the context or the service account names, if any
    namespace: str | None = None
    #: a fixed bearer token (a kubeconfig's ``token``): never shown
    fixed_token: str | None = field(default=None, repr=False)
    #: a file holding the bearer token, read at every request (rotated in place)
    token_file: Path | None = None

    def token(self) -> str | None:
        """The bearer token to send now, or None (a client certificate authenticates instead)."""
        if self.token_file is None:
            return self.fixed_token
        try:
            return self.token_file.read_text(encoding="utf-8").strip() or None
        except OSError as e:
            raise ExecutorError(f"{self.source}: cannot read the token file {self.token_file}: {one_line(e)}") from None


def load_credentials(kubeconfig: Path | None, context: str | None) -> Credentials:
    """The credentials the settings point at (see the module's docstring for the order)."""
    if kubeconfig is not None:
        return from_kubeconfig(kubeconfig, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        return in_cluster()
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return from_kubeconfig(Path(listed[0]) if listed else Path.home() / ".kube" / "config", context)


def in_cluster(account: Path | None = None) -> Credentials:
    """The pod's service account (``KUBERNETES_SERVICE_HOST``/``_PORT`` and the mounted files)."""
    account = account or SERVICE_ACCOUNT_DIR
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    where = "the in-cluster service account"
    token_file, ca = account / "token", account / "ca.crt"
    for f in (token_file, ca):
        if not f.is_file():
            raise ExecutorError(f"{where}: {f} does not exist (is a service account mounted in this pod?)")
    namespace_file = account / "namespace"
    namespace = namespace_file.read_text(encoding="utf-8").strip() if namespace_file.is_file() else None
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return Credentials(server=server, tls=_trust(ca.read_bytes(), where), source=where, namespace=namespace or None, token_file=token_file)


def from_kubeconfig(path: Path, context: str | None) -> Credentials:
    """The credentials of ``context`` (default: the file's ``current-context``) in ``path``."""
    path = path.expanduser()
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExecutorError(f"kubeconfig {path} does not exist (set kubeconfig: or KUBECONFIG, or run inside a cluster)") from None
    except YAMLTooBig as e:  # its text is the line to show
        raise ExecutorError(f"kubeconfig {path} cannot be read as YAML: {e}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ExecutorError(f"kubeconfig {path} cannot be read as YAML: {one_line(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ExecutorError(f"kubeconfig {path} is not a mapping")
    chosen = context or doc.get("current-context")
    if not chosen:
        raise ExecutorError(f"kubeconfig {path} has no current-context: set context:")
    where = f"kubeconfig {path}, context {chosen}"
    ctx = _named(doc, "contexts", "context", str(chosen), f"kubeconfig {path}")
    cluster = _named(doc, "clusters", "cluster", str(ctx.get("cluster", "")), where)
    user = _named(doc, "users", "user", str(ctx.get("user", "")), where) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")) or "@" in server:
        raise ExecutorError(f"{where}: the cluster's server must be an https:// URL without credentials")
    if cluster.get("insecure-skip-tls-verify"):
        raise ExecutorError(f"{where}: insecure-skip-tls-verify is not supported: give the cluster's certificate-authority")
    for refused in ("exec", "auth-provider", "username", "password"):
        if user.get(refused):
            raise ExecutorError(
                f"{where}: the user's {refused} is not supported: give Docktor a service-account token "
                "(token or tokenFile) or a client certificate"
            )
    ca = _bytes(cluster, "certificate-authority", path, where)
    tls = _trust(ca, where) if server.startswith("https://") else None
    cert, key = _bytes(user, "client-certificate", path, where), _bytes(user, "client-key", path, where)
    if tls is not None and cert is not None and key is not None:
        _present(tls, cert, key, where)
    token_file = user.get("tokenFile")
    namespace = ctx.get("namespace")
    return Credentials(
        server=server.rstrip("/"), tls=tls, source=where, namespace=namespace if isinstance(namespace, str) else None,
        fixed_token=str(user["token"]) if user.get("token") else None,
        token_file=_relative(path, str(token_file)) if token_file else None,
    )


def _named(doc: Mapping[str, Any], section: str, key: str, name: str, where: str) -> dict[str, Any]:
    """The ``key`` mapping of the entry called ``name`` in ``doc[section]`` (kubeconfig's named lists)."""
    entries = doc.get(section) or []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(key), dict):
            return dict(entry[key])
    known = ", ".join(str(e.get("name")) for e in entries if isinstance(e, dict)) if isinstance(entries, list) else ""
    raise ExecutorError(f"{where}: no {key} named {name!r} in {section} (it has: {known or 'none'})")


def _relative(kubeconfig: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else kubeconfig.parent / p


def _bytes(entry: Mapping[str, Any], key: str, kubeconfig: Path, where: str) -> bytes | None:
    """A kubeconfig's ``key`` (a file, relative to the kubeconfig) or ``key-data`` (base64), as bytes."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError):
            raise ExecutorError(f"{where}: {key}-data is not base64") from None
    name = entry.get(key)
    if not name:
        return None
    try:
        return _relative(kubeconfig, str(name)).read_bytes()
    except OSError as e:
        raise ExecutorError(f"{where}: cannot read {key} {_relative(kubeconfig, str(name))}: {one_line(e)}") from None


def _trust(ca: bytes | None, where: str) -> ssl.SSLContext:
    """A context verifying the server against ``ca`` (the system's store when None), host name included."""
    try:
        if ca is None:
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
        raise ExecutorError(f"{where}: the certificate authority cannot be loaded: {one_line(e)}") from None


def _present(tls: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    """Load a client certificate given as bytes: ``ssl`` reads only files, so they go through a
    private folder (0700, removed at once)."""
    with tempfile.TemporaryDirectory(prefix="docktor-kube-") as folder:
        cert_file, key_file = Path(folder) / "client.crt", Path(folder) / "client.key"
        for f, data in ((cert_file, cert), (key_file, key)):
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        try:
            tls.load_cert_chain(str(cert_file), str(key_file))
        except (ssl.SSLError, OSError) as e:
            raise ExecutorError(f"{where}: the client certificate and key cannot be loaded: {one_line(e)}") from None
