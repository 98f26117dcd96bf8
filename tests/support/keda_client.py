"""KEDA's side of the external scaler protocol, for the tests of ``docktor keda``: the process,
and a real gRPC client asking what KEDA asks (the HPA's arithmetic on the answers is the
simulator's, ``docktor.agent.sim.kube``, written from the controller's source).

The client sends what KEDA's external scaler sends (a ScaledObjectRef with the trigger's
metadata; GetMetrics with the metric name GetMetricSpec gave) through grpcio, over plain gRPC or
TLS with a client certificate (KEDA's ``caCert``/``tlsClientCert``/``tlsClientKey``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli import cli_command
from tests.support.waiting import wait_until

__all__ = ["Keda", "KedaProcess", "keda_config", "nats_queue", "start_keda"]

_SERVING = re.compile(r"serving externalscaler\.ExternalScaler on (\S+):(\d+) ")


#: what every service of these tests has unless it says otherwise
SERVICE_DEFAULTS: dict[str, Any] = {"check_interval": "0.5s", "policy": "target", "target_per_replica": 100}


def nats_queue(url: str, stream: str = "JOBS", timeout: float = 2) -> dict[str, Any]:
    """A ``queue:`` block on ``stream``'s consumer WORKERS (tests/support/jetstream.py makes them)."""
    return {"kind": "nats", "url": url, "stream": stream, "consumer": "WORKERS", "timeout": timeout}


def keda_config(folder: Path, services: list[dict[str, Any]], **top: Any) -> Path:
    """``folder/docktor.yaml`` with these services (over :data:`SERVICE_DEFAULTS`) and top-level
    keys, its state in ``folder/state``."""
    config = folder / "docktor.yaml"
    doc = {"state_dir": str(folder / "state"), **top, "services": [{**SERVICE_DEFAULTS, **svc} for svc in services]}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


@dataclass
class KedaProcess:
    """``docktor keda`` running in the foreground, its output in a file."""

    proc: subprocess.Popen[bytes]
    output: Path
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def start_keda(config: Path, output: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> KedaProcess:
    """``docktor keda --config CONFIG --listen 127.0.0.1:0 ARGS``, once it says where it serves."""
    with output.open("wb") as out:
        proc = subprocess.Popen(cli_command("keda", "--config", str(config), "--listen", "127.0.0.1:0", *args),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env={**os.environ, **(env or {})},
                                start_new_session=True)

    def serving() -> re.Match[str] | None:
        text = output.read_text(errors="replace")
        if proc.poll() is not None:
            raise AssertionError(f"docktor keda exited at start ({proc.returncode}): {text[-2000:]}")
        return _SERVING.search(text)

    found = wait_until("docktor keda to serve", serving, timeout)
    return KedaProcess(proc, output, found.group(1), int(found.group(2)))


class Keda:
    """A gRPC client asking what KEDA asks, for one ScaledObject's trigger."""

    def __init__(self, address: str, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> None:
        import grpc

        from docktor.agent.keda import externalscaler_pb2 as pb
        from docktor.agent.keda.externalscaler_pb2_grpc import ExternalScalerStub

        self.pb = pb
        if ca is None:
            self.channel = grpc.aio.insecure_channel(address)
        else:
            creds = grpc.ssl_channel_credentials(
                ca.read_bytes(), None if key is None else key.read_bytes(), None if cert is None else cert.read_bytes(),
            )
            self.channel = grpc.aio.secure_channel(address, creds)
        self.stub = ExternalScalerStub(self.channel)

    def ref(self, metadata: dict[str, str]) -> Any:
        return self.pb.ScaledObjectRef(name="worker-scaler", namespace="jobs", scalerMetadata=metadata)

    async def spec(self, metadata: dict[str, str], timeout: float = 10) -> Any:
        return await self.stub.GetMetricSpec(self.ref(metadata), timeout=timeout)

    async def metric(self, metadata: dict[str, str], name: str, timeout: float = 10) -> float:
        """GetMetrics' one value, as KEDA hands it to the HPA."""
        request = self.pb.GetMetricsRequest(scaledObjectRef=self.ref(metadata), metricName=name)
        reply = await self.stub.GetMetrics(request, timeout=timeout)
        (value,) = reply.metricValues
        assert value.metricName == name
        assert value.metricValue == round(value.metricValueFloat)  # the deprecated integer agrees
        return float(value.metricValueFloat)

    async def active(self, metadata: dict[str, str], timeout: float = 10) -> bool:
        return bool((await self.stub.IsActive(self.ref(metadata), timeout=timeout)).result)

    def stream(self, metadata: dict[str, str]) -> Any:
        """StreamIsActive: an iterator of IsActiveResponse (``.cancel()`` hangs up)."""
        return self.stub.StreamIsActive(self.ref(metadata))

    async def close(self) -> None:
        await self.channel.close()
