"""Real servers from Debian's packages for the source tests: RabbitMQ, Redis, Prometheus; and a
private certificate authority (openssl) for TLS tests.

Each is started on free loopback ports with its own temp folder and always stopped. A binary that
is absent skips the test with a reason, or fails it when ``DOCKTOR_REQUIRE_SERVERS=1`` (``.ci/run``
installs the packages and sets it). Readiness is polled on the server's own health signal.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.peers import SHARED, free_port, need

__all__ = ["Certificates", "Exporter", "PrometheusServer", "RabbitMQ", "RedisServer", "make_certificates", "need_binary"]

REQUIRE = "DOCKTOR_REQUIRE_SERVERS"


def need_binary(name: str, package: str | None = None) -> str:
    """The path of ``name``; skip (or fail under DOCKTOR_REQUIRE_SERVERS=1) when it is not installed."""
    found = shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None)
    need(found is not None, f"{name} not installed (apt-get install {package or name})", REQUIRE)
    assert found is not None
    return found


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if ready():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not become ready within {timeout:g}s\n{tail}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, 10 s for it to exit, then SIGKILL; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- RabbitMQ


@dataclass
class RabbitMQ:
    """A private broker (../shared/env/rabbitmq-local.sh: statistics every second) on loopback.

    With ``tls``, it also serves the management API over HTTPS and AMQP over TLS (AMQPS) with the
    certificates' server certificate, on ports of their own: a conf.d file beside the launcher's
    own configuration (``RABBITMQ_CONFIG_FILES``), which the broker reads after it.
    """

    dir: Path
    amqp_port: int
    mgmt_port: int
    pid: int | None = None
    tls: Certificates | None = None
    mgmt_tls_port: int = 0
    amqps_port: int = 0
    #: the broker's collect_statistics_interval in ms, when not the launcher's 1000 (a longer one
    #: makes the management API's lag outlast a test's reads, as production's 5 s often does)
    statistics_ms: int | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.mgmt_tls_port}"

    @property
    def amqps_url(self) -> str:
        return f"amqps://127.0.0.1:{self.amqps_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://127.0.0.1:{self.amqp_port}"

    @classmethod
    def start(cls, dir: Path, tls: Certificates | None = None, statistics_ms: int | None = None) -> RabbitMQ:
        need_binary("rabbitmq-server")
        script = SHARED / "env" / "rabbitmq-local.sh"
        need(script.is_file(), f"{script} missing (the RabbitMQ launcher lives in ../shared)", REQUIRE)
        broker = cls(_broker_home(dir), _amqp_port(), free_port(), statistics_ms=statistics_ms)
        if tls is not None:
            broker.tls, broker.mgmt_tls_port, broker.amqps_port = tls, free_port(), free_port()
        broker.launch()
        return broker

    def _tls_config(self) -> dict[str, str]:
        """The conf.d files for ``tls`` (its certificates copied in: the broker's user must read
        them) and ``statistics_ms``, read after the launcher's own configuration."""
        if self.tls is None and self.statistics_ms is None:
            return {}
        import shutil

        conf_d, own = self.dir / "conf.d", self.dir / "tls"
        conf_d.mkdir(parents=True, exist_ok=True)
        if self.statistics_ms is not None:
            (conf_d / "20-statistics.conf").write_text(f"collect_statistics_interval = {self.statistics_ms}\n")
        if self.tls is None:
            return {"RABBITMQ_CONFIG_FILES": str(conf_d)}
        own.mkdir(exist_ok=True)
        files = {}
        for name, src in (("cacertfile", self.tls.ca), ("certfile", self.tls.server_cert), ("keyfile", self.tls.server_key)):
            files[name] = own / src.name
            shutil.copyfile(src, files[name])
        lines = ["management.ssl.ip = 127.0.0.1", f"management.ssl.port = {self.mgmt_tls_port}",
                 f"listeners.ssl.default = 127.0.0.1:{self.amqps_port}", "ssl_options.verify = verify_none"]
        for name, path in files.items():
            lines += [f"management.ssl.{name} = {path}", f"ssl_options.{name} = {path}"]
        (conf_d / "10-tls.conf").write_text("\n".join(lines) + "\n")
        return {"RABBITMQ_CONFIG_FILES": str(conf_d)}

    def launch(self) -> None:
        """(Re)start the broker in its folder on its ports: durable queues survive a restart."""
        done = subprocess.run(
            ["bash", str(SHARED / "env" / "rabbitmq-local.sh"), str(self.dir), str(self.amqp_port), str(self.mgmt_port)],
            capture_output=True, text=True, timeout=180, check=False, env={**os.environ, **self._tls_config()},
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq-local.sh failed ({done.returncode}): {done.stderr[-2000:]}")
        self.pid = int(done.stdout.split()[-1])

    def stop(self) -> None:
        """Stop the broker and wait until its process is gone and its ports are closed."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 60
        while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{self.pid}").exists():
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        _wait("the management port to close", lambda: not _listening(self.mgmt_port), None, 30)

    def api(self, method: str, path: str, body: bytes | None = None) -> object:
        """A call to the management API as guest (the tests' own view, independent of the source)."""
        import base64
        import json

        req = urllib.request.Request(f"{self.url}/api/{path}", data=body, method=method)
        req.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return json.loads(data) if data else None


def _broker_home(near: Path) -> Path:
    """The broker's folder: under /tmp, not the test's own tmp_path.

    Debian's wrapper runs the broker as user ``rabbitmq``, so every folder above its own must be
    searchable by that user; rabbitmq-local.sh makes them so, but pytest resets
    ``/tmp/pytest-of-<user>`` to 0700 at the start of every session, so a second pytest (another
    engineer's run, or a parallel worker) starting while a broker runs took its folder away: the
    broker then failed with HTTP 500s and ``failed_to_create_feature_flags_file_directory``. The
    folder is removed when the tests end; ``near`` gets a link to it, for the logs.
    """
    import atexit
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="docktor-rabbitmq-", dir="/tmp"))
    home.chmod(0o711)
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    near.mkdir(parents=True, exist_ok=True)
    link = near / "rabbitmq"
    if not link.exists():
        link.symlink_to(home)
    return home


def _amqp_port() -> int:
    """A free AMQP port whose Erlang distribution port is free too.

    rabbitmq-local.sh derives the node's distribution port from the AMQP port (+-20000); a
    broker whose distribution port another process holds fails to start, so both must be free.
    """
    while True:
        port = free_port()
        dist = port - 20000 if port + 20000 > 65000 else port + 20000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", dist))
            except OSError:
                continue
        return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    port: int
    dir: Path
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = None
    tls_port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, dir: Path, *args: str, tls: Certificates | None = None) -> RedisServer:
        need_binary("redis-server")
        dir.mkdir(parents=True, exist_ok=True)
        extra = list(args)
        tls_port = None
        if tls is not None:
            tls_port = free_port()
            extra += [
                "--tls-port", str(tls_port), "--tls-cert-file", str(tls.server_cert), "--tls-key-file", str(tls.server_key),
                "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "yes",
            ]
        server = cls(free_port(), dir, tuple(extra), tls_port=tls_port)
        server.launch()
        return server

    def launch(self) -> None:
        log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [
                need_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--logfile", str(log), "--daemonize", "no", *self.args,
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait("redis-server", lambda: _redis_ready(self.port), self.proc, 30, log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            # +PONG, or -NOAUTH when a password is required: either way it serves commands
            return reply.startswith((b"+PONG", b"-NOAUTH")) and not reply.startswith(b"-LOADING")
    except OSError:
        return False


# --------------------------------------------------------------------------- Prometheus


@dataclass
class PrometheusServer:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    web_config: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    #: (user, password) its web config requires of every request, /-/ready included
    basic_auth: tuple[str, str] | None = None

    @classmethod
    def start(cls, dir: Path, targets: list[str], *, scrape_interval: str = "1s", tls: Certificates | None = None,
              basic_auth: tuple[str, str] | None = None) -> PrometheusServer:
        """Prometheus scraping ``targets`` (host:port) every ``scrape_interval`` under job ``test``;
        serving TLS with ``tls``, requiring ``basic_auth``'s user and password when given."""
        need_binary("prometheus")
        dir.mkdir(parents=True, exist_ok=True)
        config = dir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
            "scrape_configs:\n  - job_name: test\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        server = cls(free_port(), dir)
        if tls is not None:
            server.scheme = "https"
            server.web_config = dir / "web.yml"
            server.web_config.write_text(
                "tls_server_config:\n"
                f"  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n"
                f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {tls.ca}\n"
            )
        elif basic_auth is not None:
            server.basic_auth = basic_auth
            server.web_config = dir / "web.yml"
            server.web_config.write_text(f"basic_auth_users:\n  {basic_auth[0]}: '{bcrypt_hash(basic_auth[1])}'\n")
        server.launch()
        return server

    def launch(self) -> None:
        log = self.dir / "prometheus.log"
        args = [
            need_binary("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        if self.web_config is not None:
            args.append(f"--web.config.file={self.web_config}")
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _wait("prometheus", lambda: _listening(self.port) and self._ready(), self.proc, 60, log)

    def _ready(self) -> bool:
        if self.scheme == "https":
            return True  # the listener is up; the tests' own TLS clients prove the rest
        request = urllib.request.Request(f"{self.url}/-/ready")
        if self.basic_auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def bcrypt_hash(password: str) -> str:
    """What Prometheus's ``basic_auth_users`` wants: a bcrypt hash (the system's libxcrypt makes it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


# --------------------------------------------------------------------------- a private CA


@dataclass(frozen=True)
class Certificates:
    """A private CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by it."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path = field(default=Path())  # a CA that signed nothing here (to prove verification)


def make_certificates(dir: Path) -> Certificates:
    """Real X.509 files made by the openssl CLI (Debian's openssl)."""
    openssl = need_binary("openssl")
    dir.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=dir, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=docktor test {ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem")
    (dir / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (dir / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=docktor test {name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    for key in dir.glob("*.key"):
        key.chmod(0o644)  # servers started as another user (none here) would need to read them
    return Certificates(dir, dir / "ca.pem", dir / "server.pem", dir / "server.key", dir / "client.pem", dir / "client.key",
                        dir / "other-ca.pem")


# --------------------------------------------------------------------------- a scrape target


class Exporter:
    """A real HTTP scrape target on loopback serving ``text`` (Prometheus exposition format), which
    a test changes at will; ``stop()`` closes the port (its series go stale in Prometheus)."""

    def __init__(self, text: str = "", port: int | None = None) -> None:
        import http.server
        import threading

        self.text = text
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner.text.encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = port or free_port()
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
