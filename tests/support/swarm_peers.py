"""Docker Swarm for the tests: the shared engine turned into a single-node swarm, and stacks on it.

The engine is shared with other test runs (Compose tests, other engineers). A test run makes it
a swarm (``docker swarm init --advertise-addr 127.0.0.1``) before its first test when it has Swarm
tests (marked ``swarm``), and leaves it after its last test only if it was not one before and no
service is left on it (a concurrent run may still be using it): never in the middle of a run,
where a Compose test may be running beside. :func:`swarm_session` alone (a benchmark) initialises
the swarm when needed and leaves it afterwards on the same conditions. This engine supports
host-mode publishing only (no ingress routing mesh), so test stacks publish in ``mode: host`` or
not at all.

Stacks are deployed with the ``docker`` CLI (``docker stack deploy``, which the Engine API has no
single call for) with ``--resolve-image never``: no registry is reachable, images are local.
Everything a test asserts is read through the Engine API, independently of the executor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from tests.support.peers import need, unique_project

SWARM_SKIP_REASON = "no Docker engine (with the docker CLI) reachable for Swarm tests (set DOCKER_HOST)"


@lru_cache(maxsize=1)
def swarm_possible() -> bool:
    import docker

    if shutil.which("docker") is None:
        return False
    try:
        docker.from_env(timeout=5).ping()
    except (docker.errors.DockerException, OSError):
        return False
    return True


def need_swarm() -> None:
    need(swarm_possible(), SWARM_SKIP_REASON, "DOCKTOR_REQUIRE_DOCKER")


def client() -> Any:
    import docker

    return docker.from_env(timeout=60)


#: set in a test run (tests/conftest.py): the swarm is held from before the first test to after
#: the last, so a Compose test running beside a Swarm test never sees swarm mode toggle
_held_for_the_run = False


def swarm_state() -> str | None:
    """The engine's swarm state ("active", "inactive", ...), None without an engine."""
    if not swarm_possible():
        return None
    c = client()
    try:
        return str((c.info().get("Swarm") or {}).get("LocalNodeState"))
    finally:
        c.close()


def _make_swarm(c: Any) -> bool:
    """Initialise a swarm unless the engine is in one; True if this call initialised it."""
    if (c.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        return False
    try:
        c.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        return True
    except Exception as e:  # another run initialised it at the same moment
        if (c.info().get("Swarm") or {}).get("LocalNodeState") != "active":
            raise RuntimeError(f"cannot turn the engine into a swarm: {e}") from e
        return False


def hold_swarm_for_the_run() -> None:
    """Make the engine a swarm now, before any test runs, and keep it one until
    :func:`release_swarm` (the run's end). Nothing without an engine (the tests skip or fail)."""
    global _held_for_the_run
    if not swarm_possible():
        return
    _held_for_the_run = True
    c = client()
    try:
        _make_swarm(c)
    finally:
        c.close()


def release_swarm(was: str | None) -> None:
    """At the run's end: leave the swarm if the engine was not one when the run began (``was``,
    from :func:`swarm_state`) and no service is left on it (another run may be using it)."""
    if was is None or was == "active":
        return
    c = client()
    try:
        if (c.info().get("Swarm") or {}).get("LocalNodeState") == "active" and not c.services.list():
            c.swarm.leave(force=True)
    finally:
        c.close()


@contextmanager
def swarm_session() -> Iterator[None]:
    """The engine is a swarm manager inside. In a test run the swarm is the run's (held, see
    above); alone (a benchmark), the engine is left as it was found (see the module doc)."""
    need_swarm()
    c = client()
    initialised = _make_swarm(c)
    try:
        yield
    finally:
        if initialised and not _held_for_the_run and not c.services.list():
            c.swarm.leave(force=True)
        c.close()


def unique_stack(prefix: str = "dtk") -> str:
    # stack names end up in service and network names: short, lower-case
    return unique_project(prefix)


def docker_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def deploy_stack(name: str, file: Path, env: dict[str, str] | None = None) -> None:
    docker_cli("stack", "deploy", "--resolve-image", "never", "-c", str(file), name, env=env)


def remove_stack(name: str) -> None:
    """Remove the stack and wait until its services, containers and networks are gone; never raises."""
    c = client()
    try:
        subprocess.run(["docker", "stack", "rm", name], capture_output=True, timeout=120, check=False)
        label = f"com.docker.stack.namespace={name}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            left = (
                c.services.list(filters={"label": label})
                + c.containers.list(all=True, filters={"label": label})
                + c.networks.list(filters={"label": label})
            )
            if not left:
                return
            time.sleep(0.5)
    except Exception:
        pass
    finally:
        c.close()


def service_tasks(service: str) -> list[dict[str, Any]]:
    """The service's tasks, straight from the Engine API."""
    c = client()
    try:
        svc = c.api.inspect_service(service)
        return [t for t in c.api.tasks(filters={"service": svc["ID"]}) if t["ServiceID"] == svc["ID"]]
    finally:
        c.close()


def running_tasks(service: str) -> list[dict[str, Any]]:
    return [t for t in service_tasks(service) if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]


def replicas_spec(service: str) -> int:
    c = client()
    try:
        return int(c.api.inspect_service(service)["Spec"]["Mode"]["Replicated"]["Replicas"])
    finally:
        c.close()


# --------------------------------------------------------------------------- TLS in front of the engine


def make_tls_material(folder: Path) -> tuple[Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as Docker lays them out.

    Returns (client folder: ca.pem, cert.pem, key.pem for DOCKER_CERT_PATH; server folder).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, k: Any, issuer: str, ik: Any, *, ca: bool = False, usage: Any = None, ip: str | None = None) -> Any:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ik.public_key()), critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True)
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if ip is not None:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        return b.sign(ik, hashes.SHA256())

    def pem(obj: Any) -> bytes:
        if hasattr(obj, "private_bytes"):
            return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
        return obj.public_bytes(serialization.Encoding.PEM)

    ca_key = key()
    ca = cert("docktor-test-ca", ca_key, "docktor-test-ca", ca_key, ca=True)
    server_key, client_key = key(), key()
    server = cert("127.0.0.1", server_key, "docktor-test-ca", ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1")
    client_cert = cert("docktor", client_key, "docktor-test-ca", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    client_dir, server_dir = folder / "client", folder / "server"
    client_dir.mkdir()
    server_dir.mkdir()
    for d in (client_dir, server_dir):
        (d / "ca.pem").write_bytes(pem(ca))
    (client_dir / "cert.pem").write_bytes(pem(client_cert))
    (client_dir / "key.pem").write_bytes(pem(client_key))
    (server_dir / "cert.pem").write_bytes(pem(server))
    (server_dir / "key.pem").write_bytes(pem(server_key))
    return client_dir, server_dir


@contextmanager
def tls_engine(server_dir: Path) -> Iterator[str]:
    """Stand-in for a dockerd listening with ``--tlsverify`` (the shared engine cannot be restarted
    so): a TLS server on loopback that requires a client certificate from the CA and relays every
    byte to the real engine's unix socket. Yields its ``tcp://127.0.0.1:PORT``."""
    import asyncio
    import ssl
    import threading

    engine = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not engine.startswith("unix://"):
        raise RuntimeError("the TLS stand-in relays to a unix socket engine")
    socket_path = engine.removeprefix("unix://")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(server_dir / "ca.pem"))
    context.load_cert_chain(server_dir / "cert.pem", server_dir / "key.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.new_event_loop()
    # a refused handshake (the wrong-CA case) is the client's story to tell, not noise for this log
    loop.set_exception_handler(lambda _loop, _context: None)
    ready: list[Any] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def serve() -> None:
        server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
        ready.append(server)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    server = ready[0]
    try:
        yield f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:

        async def shutdown() -> None:
            server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
