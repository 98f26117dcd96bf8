"""The gRPC server of ``docktor keda``: where it listens, its TLS, and its life beside the supervisor.

Listening follows ``metrics.listen``'s conventions (an IP address or ``localhost``, a bare port on
127.0.0.1, port 0 for any free one). Beyond loopback it needs TLS: a server certificate and key
(what KEDA's ``caCert`` verifies) and, to let only KEDA ask, a client CA (KEDA presents
``tlsClientCert``/``tlsClientKey``, signed by it). The scaler only answers reads (it never takes
an instruction), but what it answers moves a Deployment: a client certificate is how it is kept
to KEDA (docs/keda.md, "TLS").
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docktor.agent.config.model import split_listen
from docktor.agent.problems import Problem, UsageError

if TYPE_CHECKING:
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: what a stopping server lets calls in progress finish in (a stream is cut at the end of it)
GRACE_S = 1.0


@dataclass(frozen=True)
class Tls:
    """The server's certificate and key, and the CA client certificates must be signed by (or None)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None

    @classmethod
    def read(cls, cert: Path, key: Path, client_ca: Path | None) -> Tls:
        """The files' bytes, or UsageError naming the option whose file cannot be read."""
        def load(option: str, path: Path) -> bytes:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise UsageError([Problem(option, f"cannot read {path}: {e.strerror or e}")]) from None
            if b"-----BEGIN " not in data:
                raise UsageError([Problem(option, f"{path} is not PEM (no -----BEGIN line)")])
            return data

        return cls(load("--tls-cert", cert), load("--tls-key", key), None if client_ca is None else load("--tls-client-ca", client_ca))


def listen_address(text: str, *, tls: bool) -> tuple[str, int]:
    """``(host, port)`` for ``--listen TEXT``, or UsageError naming ``--listen``."""
    try:
        host, port = split_listen(text, example="127.0.0.1:9090", lowest_port=0)
    except ValueError as e:
        raise UsageError([Problem("--listen", f"{e}, got {text!r}")]) from None
    if not ipaddress.ip_address(host).is_loopback and not tls:
        raise UsageError([Problem("--listen", f"{text!r} is not a loopback address: beyond this host the scaler needs TLS "
                                              "(--tls-cert and --tls-key, and --tls-client-ca to answer KEDA alone)")])
    return host, port


def check_free(host: str, port: int) -> None:
    """UsageError naming ``--listen`` when ``host:port`` cannot be bound now (in use, not this
    host's): said before the daemon starts, rather than by the gRPC core's own log lines after."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UsageError([Problem("--listen", f"cannot listen on {host}:{port}: {e.strerror or e}")]) from None


class CannotListen(Exception):
    """The port could not be bound (in use, not this host's address): one line."""


async def serve(daemon: Supervisor, host: str, port: int, tls: Tls | None, *, bound: float) -> tuple[int, Callable[[], Awaitable[None]]]:
    """Serve :class:`DocktorScaler` for ``daemon`` on ``host:port``: the port bound, and what stops it."""
    import grpc

    from docktor.agent.keda.externalscaler_pb2_grpc import add_ExternalScalerServicer_to_server
    from docktor.agent.keda.scaler import DocktorScaler

    # no SO_REUSEPORT: a second scaler on the same port is refused, not handed half of KEDA's calls
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_ExternalScalerServicer_to_server(DocktorScaler(daemon, bound=bound), server)  # type: ignore[no-untyped-call]  # protoc's code
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound_port = server.add_insecure_port(address)
        else:
            creds = grpc.ssl_server_credentials(
                [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.client_ca is not None,
            )
            bound_port = server.add_secure_port(address, creds)
    except RuntimeError:  # grpc's way of saying the bind failed (its core logged the why)
        raise CannotListen(f"--listen: cannot listen on {address} (in use, or not an address of this host)") from None
    if not bound_port:
        raise CannotListen(f"--listen: cannot listen on {address} (in use, or not an address of this host)")
    await server.start()
    how = "plain gRPC" if tls is None else ("TLS, client certificates required" if tls.client_ca else "TLS")
    shown = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
    log.info("keda: serving externalscaler.ExternalScaler on %s (%s)", shown, how)

    async def stop() -> None:
        await server.stop(GRACE_S)

    return bound_port, stop
