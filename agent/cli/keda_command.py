"""``docktor keda``: the daemon, in the foreground, answering KEDA's external scaler calls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from docktor.agent.cli.common import ComposeOpt, ConfigOpt, check_before_start, config_file, handles_errors, load
from docktor.agent.problems import Problem, UsageError

if TYPE_CHECKING:
    from docktor.agent.config.model import DocktorConfig
    from docktor.agent.keda.serving import Tls
    from docktor.agent.runtime.supervisor import Supervisor

#: the longest a call waits for a decision, unless KEDA's own deadline is sooner
DEFAULT_BOUND_S = 5.0


def register(app: typer.Typer) -> None:
    @app.command(short_help="Run the daemon as a KEDA external scaler (gRPC).")
    @handles_errors
    def keda(
        config: ConfigOpt = None,
        compose: ComposeOpt = None,
        listen: Annotated[str, typer.Option(
            "--listen", metavar="HOST:PORT",
            help="Where to serve externalscaler.ExternalScaler (port 0: any free port, printed). Beyond loopback, TLS is required.",
        )] = "127.0.0.1:9090",
        tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="The server certificate (PEM), as KEDA's caCert verifies it.")] = None,
        tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The server certificate's key (PEM).")] = None,
        tls_client_ca: Annotated[Path | None, typer.Option(
            "--tls-client-ca", help="Answer only clients whose certificate this CA signed (KEDA's tlsClientCert).",
        )] = None,
        answer_within: Annotated[float, typer.Option(
            "--answer-within", metavar="SECONDS", min=0.1,
            help="The longest a call waits for a decision; after it, the last decision answers.",
        )] = DEFAULT_BOUND_S,
        advisory: Annotated[bool, typer.Option("--advisory", help="Decide and log; KEDA is told the count in force, never a new one.")] = False,
    ) -> None:
        """Run the daemon in the foreground and serve KEDA's external scaler protocol: a ScaledObject's
        external trigger names a service (metadata service: NAME) whose config has executor: keda;
        GetMetrics answers the replica count Docktor decided (target 1 per replica), IsActive whether
        any work waits. The control socket, explain, daemon status and /metrics work as for
        daemon start. See docs/keda.md."""
        config = config_file(config, compose)
        from docktor.agent.keda.serving import Tls, check_free, listen_address

        if (tls_cert is None) != (tls_key is None):
            raise UsageError([Problem("--tls-cert" if tls_cert is None else "--tls-key", "--tls-cert and --tls-key go together")])
        if tls_client_ca is not None and tls_cert is None:
            raise UsageError([Problem("--tls-client-ca", "needs --tls-cert and --tls-key: client certificates are checked over TLS")])
        host, port = listen_address(listen, tls=tls_cert is not None)
        check_free(host, port)
        tls = None if tls_cert is None or tls_key is None else Tls.read(tls_cert, tls_key, tls_client_ca)
        cfg = load(config, check_llm=True)
        served = [svc.name for svc in cfg.services if svc.executor is not None and svc.executor.kind == "keda"]
        if not served:
            raise UsageError([Problem("services", f"no service in {config} has executor: keda, so KEDA has nothing to ask about")])
        check_before_start(cfg)
        run(cfg, host, port, tls, answer_within, "advisory" if advisory else None)


def run(cfg: DocktorConfig, host: str, port: int, tls: Tls | None, bound: float, mode: str | None) -> None:
    """The foreground daemon with the gRPC server beside its loops; exits with its code."""
    import sys
    from collections.abc import Awaitable, Callable

    from docktor.agent.keda.serving import CannotListen, serve
    from docktor.agent.runtime import process
    from docktor.agent.runtime.foreground import CannotServe, run_foreground

    async def companion(daemon: Supervisor) -> Callable[[], Awaitable[None]]:
        try:
            _, stop = await serve(daemon, host, port, tls, bound=bound)
        except CannotListen as e:
            raise CannotServe(str(e)) from None
        return stop

    try:
        code = run_foreground(cfg, mode=mode, companion=companion)
    except process.AlreadyRunning as e:
        print(f"error: {e}; stop it first (docktor daemon stop), or give docktor keda a config of its own", file=sys.stderr)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
