"""``docktor keda`` at its edges: TLS with a private CA (the server certificate KEDA's ``caCert``
verifies, the client certificate ``tlsClientCert`` presents), and bad input refused with one
line and exit 2 before anything starts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.cli import docktor
from tests.support.daemons import records, start_foreground
from tests.support.jetstream import make_stream, publish, purge
from tests.support.keda_client import Keda, keda_config, nats_queue, start_keda
from tests.support.peers import NatsServer, start_nats
from tests.support.servers import Certificates, make_certificates
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)

WORKER = {"service": "worker"}


def write_keda_config(folder: Path, nats_url: str, **executor: Any) -> Path:
    """One service ``worker`` on JOBS, 1-4 replicas, under ``executor: keda`` unless ``executor`` says otherwise."""
    return keda_config(folder, [{
        "name": "worker", **(executor or {"executor": "keda", "initial_replicas": 1}),
        "min_replicas": 1, "max_replicas": 4, "queue": nats_queue(nats_url),
    }])


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("js"))
    try:
        asyncio.run(make_stream(server.url, 0))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


async def _refused(keda: Keda) -> grpc.StatusCode:
    try:
        await keda.spec(WORKER, timeout=10)
    except grpc.aio.AioRpcError as e:
        return e.code()
    finally:
        await keda.close()
    raise AssertionError("the call was answered")


async def test_tls_answers_only_a_client_the_ca_signed(tmp_path: Path, nats: NatsServer, certificates: Certificates) -> None:
    c = certificates
    config = write_keda_config(tmp_path, nats.url)
    keda = start_keda(config, tmp_path / "keda.out", "--tls-cert", str(c.server_cert), "--tls-key", str(c.server_key),
                      "--tls-client-ca", str(c.ca))
    try:
        assert "(TLS, client certificates required)" in keda.log_text()
        address = f"localhost:{keda.port}"  # the certificate names localhost and 127.0.0.1
        kedas = Keda(address, ca=c.ca, cert=c.client_cert, key=c.client_key)
        try:
            (spec,) = (await kedas.spec(WORKER)).metricSpecs
            assert spec.metricName == "docktor-worker"
            assert await kedas.metric(WORKER, spec.metricName) == 1.0
        finally:
            await kedas.close()
        # no client certificate; a server the client cannot verify; plain gRPC: none is answered
        assert await _refused(Keda(address, ca=c.ca)) == grpc.StatusCode.UNAVAILABLE
        assert await _refused(Keda(address, ca=c.other_ca, cert=c.client_cert, key=c.client_key)) == grpc.StatusCode.UNAVAILABLE
        assert await _refused(Keda(address)) == grpc.StatusCode.UNAVAILABLE
    finally:
        assert keda.stop() == 0, keda.log_text()[-2000:]


async def test_tls_without_a_client_ca_answers_any_client_that_trusts_the_server(
    tmp_path: Path, nats: NatsServer, certificates: Certificates
) -> None:
    c = certificates
    keda = start_keda(write_keda_config(tmp_path, nats.url), tmp_path / "keda.out", "--tls-cert", str(c.server_cert),
                      "--tls-key", str(c.server_key))
    try:
        assert "(TLS)" in keda.log_text()
        anyone = Keda(f"localhost:{keda.port}", ca=c.ca)
        try:
            assert await anyone.active(WORKER) is True  # min_replicas 1
        finally:
            await anyone.close()
        assert await _refused(Keda(f"localhost:{keda.port}", ca=c.other_ca)) == grpc.StatusCode.UNAVAILABLE
    finally:
        assert keda.stop() == 0, keda.log_text()[-2000:]


def test_beyond_loopback_without_tls_is_refused(tmp_path: Path, nats: NatsServer) -> None:
    config = write_keda_config(tmp_path, nats.url)
    refused = docktor("keda", "--config", str(config), "--listen", "0.0.0.0:0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --listen: '0.0.0.0:0' is not a loopback address: beyond this host the scaler needs TLS "
        "(--tls-cert and --tls-key, and --tls-client-ca to answer KEDA alone)"
    ]


@pytest.mark.parametrize(("args", "says"), [
    (["--listen", "somewhere:9090"], "--listen: the host must be an IP address or localhost"),
    (["--listen", "127.0.0.1:99999"], "--listen: the port must be between 0 (any free port) and 65535"),
    (["--tls-cert", "server.pem"], "--tls-key: --tls-cert and --tls-key go together"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca: needs --tls-cert and --tls-key"),
    (["--tls-cert", "absent.pem", "--tls-key", "absent.key"], "--tls-cert: cannot read absent.pem: No such file or directory"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    config = write_keda_config(tmp_path, "nats://127.0.0.1:9")
    done = docktor("keda", "--config", str(config), *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines


def test_a_config_that_is_absent_or_serves_no_keda_service_is_refused(tmp_path: Path) -> None:
    absent = docktor("keda", "--config", str(tmp_path / "nowhere.yaml"))
    assert absent.returncode == 2 and len(absent.stderr.strip().splitlines()) == 1, absent.stderr
    assert "nowhere.yaml" in absent.stderr

    compose = write_keda_config(tmp_path, "nats://127.0.0.1:9", executor="local", command=["sleep", "600"])
    none = docktor("keda", "--config", str(compose))
    assert none.returncode == 2
    assert none.stderr.strip().splitlines() == [
        f"error: services: no service in {compose} has executor: keda, so KEDA has nothing to ask about"
    ]


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_keda_config(tmp_path, "nats://127.0.0.1:9")
        done = docktor("keda", "--config", str(config), "--listen", f"127.0.0.1:{port}", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: --listen: cannot listen on 127.0.0.1:{port}: Address already in use"]


async def test_advisory_decides_and_logs_but_tells_keda_the_count_in_force(tmp_path: Path, nats: NatsServer) -> None:
    config = write_keda_config(tmp_path, nats.url)
    keda = start_keda(config, tmp_path / "keda.out", "--advisory")
    client = Keda(keda.address)
    try:
        await publish(nats.url, "jobs.x", 350)
        log = tmp_path / "state" / "decisions.jsonl"
        up = await eventually("a scale-up decided", lambda: [r for r in records(log, "worker") if r["decision"] == "scale_up"])
        assert up[0]["mode"] == "advisory" and not up[0]["executed"]
        assert await client.metric(WORKER, "docktor-worker") == 1.0  # initial_replicas: nothing was acted on
    finally:
        await client.close()
        await purge(nats.url, "JOBS")
        assert keda.stop() == 0, keda.log_text()[-2000:]


def test_daemon_start_warns_that_it_serves_no_keda(tmp_path: Path, nats: NatsServer) -> None:
    running = start_foreground(write_keda_config(tmp_path, nats.url), tmp_path / "state")
    try:
        assert ("warning: worker: executor: keda, and daemon start serves no KEDA: its decisions reach no replica "
                "(run docktor keda to serve them)") in running.log_text()
    finally:
        assert running.stop() == 0
