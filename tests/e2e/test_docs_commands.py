"""Every ``docktor`` command in README.md and docs/*.md, run as written against the config it names.

The commands are read from the fenced ``sh`` blocks (a ``\\`` continues a line; ``#`` starts a
comment). Each has an entry in :data:`PLANS`: run, with the exit status the docs give; served
until Ctrl-C; only parsed, because it is a measurement that takes minutes; or not run here, with
the reason. A command the docs gain without an entry fails the test, and so does an entry whose
command the docs lost: nothing is skipped unseen.

A document's commands run in its order, in a temp copy of what they name (nothing in the
repository is written; a config the document shows as a yaml block is written from that block),
beside one real nats-server for the module. What differs from the text, and why, is in
:data:`SWAPS`: the fixed ports (taken, maybe, on a shared machine) and the example path
/srv/docktor.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import cli_command, cli_environment, docktor
from tests.support.examples import replica_stop_lines
from tests.support.peers import REPO, NatsServer, free_port, start_nats
from tests.support.servers import make_certificates
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCKS = {"sh", "shell", "bash", "console"}


@dataclass(frozen=True)
class Run:
    """Run to its end, in the sub-folder ``where`` (its block's own files): exit ``status``, and
    ``says`` in its output when given."""

    status: int = 0
    says: str = ""
    where: str = ""


@dataclass(frozen=True)
class Serve:
    """A foreground server: started, ``ready`` awaited in its output, then Ctrl-C; exit 0."""

    ready: str
    where: str = ""


@dataclass(frozen=True)
class ParseOnly:
    """Its options parsed by the real CLI (so a renamed one fails), not run: ``why``."""

    why: str


@dataclass(frozen=True)
class NotHere:
    """Not run on this machine: ``why``."""

    why: str


Plan = Run | Serve | ParseOnly | NotHere

BENCH = "the measurement itself (about 15 s of CPU, minutes with --grid or held-out traces); make bench runs it, tests/unit/test_bench_cli.py its options on small traces"

FROM_LOG = ("needs the decision log of a daemon that worked under load (a replay wants 5 decisions with queue readings; "
            "the root config's daemon here logs only 'replicas unknown': no Docker engine); "
            "tests/e2e/test_bench_from_log.py runs it on the quick start's log after a real burst")

#: (document, command as shlex.join writes it) -> what is done with it
PLANS: dict[tuple[str, str], Plan] = {
    # README.md, "Using it": from the repository root, on its docktor.yaml (examples/nats-multi's consumer)
    ("README.md", "docktor --version"): Run(says="docktor "),
    ("README.md", "docktor validate --config docktor.yaml"): Run(says="ok: 1 service(s), mode advisory"),
    ("README.md", "docktor validate --config docktor.yaml --connect"): NotHere(
        "asks the Compose executor: needs a Docker engine running examples/nats-multi's stack (without one it says so, "
        "exit 2); --connect itself: tests/e2e/test_validate_connect.py"),
    ("README.md", "docktor decide --config docktor.yaml --once --dry-run"): Run(says="consumer"),
    ("README.md", "docktor daemon start --config docktor.yaml --advisory"): Run(says="started docktor"),
    ("README.md", "docktor daemon logs --config docktor.yaml -f"): Serve(ready="consumer"),
    ("README.md", "docktor daemon status --config docktor.yaml"): Run(says="docktor is running"),
    ("README.md", "docktor explain --config docktor.yaml -n 5 --changes"): Run(),
    ("README.md", "docktor pause consumer --config docktor.yaml --for 30m"): Run(says="paused consumer"),
    ("README.md", "docktor resume consumer --config docktor.yaml"): Run(says="resumed consumer"),
    ("README.md", "docktor scale consumer --to 6 --config docktor.yaml"): Run(1, "runs in advisory mode"),
    ("README.md", "docktor daemon reload --config docktor.yaml"): Run(says="reloaded"),
    ("README.md", "docktor daemon stop --config docktor.yaml"): Run(says="stopped docktor"),
    ("README.md", "docktor mcp --config docktor.yaml"): Run(says="serving stdio"),  # stdin at its end: done
    ("README.md", "docktor keda --config keda.yaml --listen 127.0.0.1:9090"): Serve("serving externalscaler.ExternalScaler",
                                                                                    where="keda"),
    ("README.md", "docktor llm check --config docktor.yaml"): Run(2, "no LLM is configured"),
    ("README.md", "docktor simulate step --policy docktor"): Run(),
    ("README.md", "docktor bench"): ParseOnly(BENCH),
    ("README.md", "docktor bench --traces my-load.csv --markdown"): Run(says="| my-load"),
    ("README.md", "docktor bench --grid --held-out 11 --jobs 2"): ParseOnly(BENCH),
    ("README.md", "docktor bench --from-log .docktor/decisions.jsonl --config docktor.yaml"): NotHere(FROM_LOG),
    # README.md, a Compose file as the config: its compose.yaml in a folder of its own
    ("README.md", "docktor validate --compose compose.yaml"): Run(says="ok: 1 service(s)", where="compose"),
    ("README.md", "docktor daemon start --compose compose.yaml"): Run(says="started docktor", where="compose"),
    ("README.md", "docktor daemon status"): Run(says="using compose.yaml", where="compose"),
    # docs/configuration.md, "In a Compose file": its compose.yaml
    ("docs/configuration.md", "docktor validate --compose compose.yaml"): Run(says="ok: 1 service(s), mode advisory"),
    ("docs/configuration.md", "docktor daemon start --compose compose.yaml --advisory"): Run(says="started docktor"),
    # docs/keda.md: its keda.yaml, and a private CA's files for the TLS line
    ("docs/keda.md", "docktor keda --config keda.yaml --listen 127.0.0.1:9090"): Serve("(plain gRPC)"),
    ("docs/keda.md", "docktor keda --config keda.yaml --listen 0.0.0.0:9090 --tls-cert tls.crt --tls-key tls.key "
                     "--tls-client-ca ca.crt"): Serve("(TLS, client certificates required)"),
    # docs/operations.md: in examples/quickstart, with its daemon running
    ("docs/operations.md", "docktor daemon status --config docktor.yaml"): Run(says="docktor is running"),
    ("docs/operations.md", "docktor pause worker --config docktor.yaml --for 30m -r 'incident 42'"): Run(says="paused worker"),
    ("docs/operations.md", "docktor resume worker --config docktor.yaml"): Run(says="resumed worker"),
    ("docs/operations.md", "docktor scale worker --to 6 --config docktor.yaml -r 'load test'"): Run(says="worker: scale_up"),
    ("docs/operations.md", "docktor daemon reload --config docktor.yaml"): Run(says="reloaded"),
    ("docs/operations.md", "docktor daemon stop --config docktor.yaml --timeout 60"): Run(says="stopped docktor"),
    ("docs/operations.md", "docktor mcp --config /srv/docktor/docktor.yaml"): Run(says="serving stdio"),
    ("docs/operations.md", "docktor mcp --config /srv/docktor/docktor.yaml --http 127.0.0.1:8765"): Serve("serving http://"),
    # docs/policy.md: replaying your own load
    ("docs/policy.md", "docktor bench --from-log .docktor/decisions.jsonl --config docktor.yaml"): NotHere(FROM_LOG),
    ("docs/policy.md", "docktor bench --from-log .docktor/decisions.jsonl --config docktor.yaml --service worker --json"):
        NotHere(FROM_LOG),
    ("docs/policy.md", "docktor bench --from-prometheus http://127.0.0.1:9090 --query 'sum(rate(jobs_published_total[1m]))' "
                       "--since 2h --config docktor.yaml --service worker"): NotHere(
        "needs a Prometheus holding hours of the workers' jobs_published_total; tests/e2e/test_bench_from_prometheus.py "
        "runs --from-prometheus on a real Prometheus"),
    # docs/benchmarks.md: the commands behind its figures
    **{("docs/benchmarks.md", c): ParseOnly(BENCH) for c in (
        "docktor bench --held-out 7,8 --policies docktor,hpa-tuned,keda,hpa,oracle",
        "docktor bench --drift 3 --policies docktor,docktor-open,rules,hpa-tuned,keda,oracle --markdown",
        "docktor bench --cap-rate 500 --policies docktor,docktor-open,rules,hpa-tuned,keda,oracle --markdown",
        "docktor bench --no-public --held-out 7,8 --policies docktor,docktor-open --json",
        "docktor bench --grid --jobs 2 --held-out 7,8",
        "docktor bench --grid --jobs 2 --held-out 7,8 --policies docktor --json",
        "docktor bench --no-public --held-out 7,8 --policies docktor --markdown",
        "docktor bench --held-out 7,8 --policies docktor,oracle --json",
        "docktor bench --no-public --held-out 9,10 --startup-s 60 --policies docktor,oracle --json",
        "docktor bench --no-public --held-out 9,10 --slo-s 5 --policies docktor,oracle --json",
        "docktor bench --traces /tmp/t7/flash-crowd.csv --startup-s 60 --policies docktor --headroom 2 --markdown",
        "docktor bench --traces /tmp/t7/flash-crowd.csv --startup-s 60 --policies hpa-tuned,keda,oracle --markdown",
    )},
}

#: text of a command replaced before it runs, and why: {document: {text: (replacement, why)}}; a
#: replacement "{port}" is a free loopback port of this run
SWAPS: dict[str, dict[str, tuple[str, str]]] = {
    "README.md": {"127.0.0.1:9090": ("127.0.0.1:{port}", "port 9090 may be taken on a shared machine")},
    "docs/keda.md": {"127.0.0.1:9090": ("127.0.0.1:{port}", "port 9090 may be taken on a shared machine"),
                     "0.0.0.0:9090": ("0.0.0.0:{port}", "port 9090 may be taken on a shared machine")},
    "docs/configuration.md": {"127.0.0.1:9464": ("127.0.0.1:{port}", "port 9464 may be taken on a shared machine")},
    "docs/operations.md": {"127.0.0.1:8765": ("127.0.0.1:{port}", "port 8765 may be taken on a shared machine"),
                           "/srv/docktor/docktor.yaml": ("{folder}/docktor.yaml", "the docs' example of a server's path")},
}


def doc_commands(doc: Path) -> list[str]:
    """The ``docktor`` commands of ``doc``'s fenced shell blocks, in order, as ``shlex.join`` writes them."""
    text = doc.read_text()
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1) not in SHELL_BLOCKS:
            continue
        for line in m.group(2).replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["docktor"]:
                out.append(shlex.join(words))
    return out


def rel(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def test_every_docs_command_has_a_plan() -> None:
    found = {(rel(doc), c) for doc in DOCS for c in doc_commands(doc)}
    assert not found - PLANS.keys(), f"commands in the docs without a plan here: {sorted(found - PLANS.keys())}"
    assert not PLANS.keys() - found, f"plans for commands no longer in the docs: {sorted(PLANS.keys() - found)}"


# --------------------------------------------------------------------------- running them


@dataclass
class Folder:
    """Where a document's commands run: the temp copy, its environment, what each command printed."""

    doc: str
    path: Path
    env: dict[str, str]
    problems: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def swapped(self, text: str) -> str:
        for old, (new, _why) in SWAPS.get(self.doc, {}).items():
            text = text.replace(old, new.format(port=free_port(), folder=self.path))
        return text

    def args(self, command: str) -> list[str]:
        return shlex.split(self.swapped(command))[1:]

    def write(self, name: str, containing: str) -> Path:
        """The document's yaml block that contains ``containing``, as the file ``name`` it calls it (swapped)."""
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.swapped(doc_yaml(REPO / self.doc, containing)))
        return path

    def run_all(self) -> None:
        """The document's commands in its own order (a daemon started before it is asked)."""
        for command in doc_commands(REPO / self.doc):
            self.run(command, PLANS[self.doc, command])
        assert not self.problems, "\n\n".join(self.problems)

    def run(self, command: str, plan: Plan) -> None:
        if isinstance(plan, NotHere):
            return
        args = self.args(command)
        if isinstance(plan, ParseOnly):
            parse(args)
            return
        self.ran.append(command)
        if isinstance(plan, Run):
            done = subprocess.run(cli_command(*args), cwd=self.path / plan.where, env=cli_environment(self.env), capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
            status, out = done.returncode, done.stdout + done.stderr
            expected, says = plan.status, plan.says
        else:
            status, out = self.serve(args, plan)
            expected, says = 0, plan.ready
        if status != expected or says not in out or "Traceback" in out:
            self.problems.append(f"{self.doc}: `{command}` exited {status} (documented: {expected}), "
                                 f"expected {says!r} and no traceback:\n{out[-3000:]}")

    def serve(self, args: list[str], plan: Serve) -> tuple[int, str]:
        ready = plan.ready
        log = self.path / f"serve-{len(self.ran)}.out"
        with log.open("wb") as out:
            proc = subprocess.Popen(cli_command(*args), cwd=self.path / plan.where, env=cli_environment(self.env), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(f"{ready!r} from docktor {' '.join(args)}",
                       lambda: proc.poll() is not None or ready in log.read_text(errors="replace"), timeout=60)
            proc.send_signal(signal.SIGINT)  # Ctrl-C, as the user stops it
            status = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return status, log.read_text(errors="replace")


def parse(args: list[str]) -> None:
    """``docktor ARGS`` parsed by the CLI's own commands down to the leaf, without running it: an
    unknown option or a bad value raises click's UsageError (:func:`_usage_error`)."""
    import typer

    from docktor.agent.cli.app import app

    command: Any = typer.main.get_command(app)
    ctx = command.make_context("docktor", list(args))
    # typer vendors its own click: a group is what resolves a subcommand, and the words left for
    # the subcommand are in _protected_args (that click has no public name for them)
    while hasattr(command, "resolve_command"):
        name, sub, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)


def _usage_error() -> type[Exception]:
    import typer

    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def doc_yaml(doc: Path, containing: str) -> str:
    """The first fenced yaml block of ``doc`` that contains ``containing``."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", doc.read_text(), re.M | re.S)
    return str(next(b for b in blocks if containing in b))


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("js"))
    try:
        yield server
    finally:
        server.stop()


async def nats_multi_queue(url: str) -> None:
    """The stream and the consumer examples/nats-multi's producer and consumers create."""
    import nats as nats_py
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    nc = await nats_py.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
        await js.add_consumer("EVENTS", ConsumerConfig(durable_name="WEB_WORKERS", ack_policy=AckPolicy.EXPLICIT,
                                                       filter_subject="events.web"))
    finally:
        await nc.close()


def nats_env(nats: NatsServer) -> dict[str, str]:
    """The module's server, told the way each config reads it (the root one: ports; the quick start:
    a URL), and the venv's bin first on PATH, as `. .venv/bin/activate` does (its `python` runs the
    quick start's worker)."""
    return {"NATS_PORT": str(nats.port), "NATS_MONITOR_PORT": str(nats.monitor_port), "NATS_URL": nats.url,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def test_readme_commands_run_as_written(tmp_path: Path, nats: NatsServer) -> None:
    """From the repository root on its docktor.yaml: the compose file it names is copied beside it,
    and the stream and consumer its example's producer and consumers create are there."""
    root = tmp_path / "repo"
    (root / "examples").mkdir(parents=True)
    shutil.copy(REPO / "docktor.yaml", root)
    shutil.copytree(REPO / "examples" / "nats-multi", root / "examples" / "nats-multi")
    (root / "keda").mkdir()  # its own state_dir: the root daemon's log keeps one service
    (root / "keda" / "keda.yaml").write_text(doc_yaml(REPO / "docs" / "keda.md", "executor: keda"))
    # the user's own trace for `bench --traces my-load.csv`: t (s), rate (messages/s)
    (root / "my-load.csv").write_text("t,rate\n" + "".join(f"{t},{200 if 60 <= t < 120 else 50}\n" for t in range(0, 240, 5)))
    asyncio.run(nats_multi_queue(nats.url))
    folder = Folder("README.md", root, {**nats_env(nats), "DOCKTOR_RUN_DIR": str(tmp_path / "run")})
    folder.write("compose/compose.yaml", "x-docktor")
    try:
        folder.run_all()
    finally:
        docktor("daemon", "stop", "--config", "docktor.yaml", "--force", cwd=root, env=folder.env)
        docktor("daemon", "stop", "--compose", "compose.yaml", "--force", cwd=root / "compose", env=folder.env)
    assert "docktor daemon start --config docktor.yaml --advisory" in folder.ran


def test_configuration_doc_commands_run_as_written(tmp_path: Path) -> None:
    """docs/configuration.md's Compose file as the config: validated, and a daemon started on it
    (no engine or NATS need answer for that: the daemon holds and says why)."""
    folder = Folder("docs/configuration.md", tmp_path, {"DOCKTOR_RUN_DIR": str(tmp_path / "run")})
    folder.write("compose.yaml", "x-docktor")
    try:
        folder.run_all()
    finally:
        docktor("daemon", "stop", "--compose", "compose.yaml", "--force", cwd=tmp_path, env=folder.env)
    assert len(folder.ran) == 2


def test_keda_doc_commands_run_as_written(tmp_path: Path) -> None:
    """docs/keda.md's two command lines on its keda.yaml (the queue host it names does not resolve
    here: the source says so every tick, and KEDA is still answered)."""
    (tmp_path / "keda.yaml").write_text(doc_yaml(REPO / "docs" / "keda.md", "executor: keda"))
    c = make_certificates(tmp_path / "ca")
    for src, dst in ((c.server_cert, "tls.crt"), (c.server_key, "tls.key"), (c.ca, "ca.crt")):
        shutil.copy(src, tmp_path / dst)
    folder = Folder("docs/keda.md", tmp_path, {"DOCKTOR_RUN_DIR": str(tmp_path / "run")})
    folder.run_all()
    assert len(folder.ran) == 2


def test_operations_doc_commands_run_as_written(tmp_path: Path, nats: NatsServer) -> None:
    """In a copy of examples/quickstart, with its daemon running as the doc says; `scale worker
    --to 6` really starts six workers, and `daemon stop` stops each on SIGTERM."""
    quickstart = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", quickstart)
    folder = Folder("docs/operations.md", quickstart, {**nats_env(nats), "DOCKTOR_RUN_DIR": str(tmp_path / "run")})
    started = docktor("daemon", "start", "--config", "docktor.yaml", cwd=quickstart, env=folder.env)
    assert started.returncode == 0, started.stderr
    try:
        folder.run_all()
    finally:
        docktor("daemon", "stop", "--config", "docktor.yaml", "--force", cwd=quickstart, env=folder.env)
    stops = replica_stop_lines(quickstart / ".docktor", "worker")
    assert len(stops) >= 6 and not any("SIGKILL" in line for lines in stops.values() for line in lines), stops


def test_parse_only_still_catches_a_wrong_option() -> None:
    parse(["bench", "--grid", "--held-out", "11", "--jobs", "2"])
    with pytest.raises(_usage_error(), match="--held-outt"):
        parse(["bench", "--grid", "--held-outt", "11"])
    with pytest.raises(_usage_error(), match="integer"):
        parse(["bench", "--jobs", "two"])
    with pytest.raises(_usage_error(), match="benchh"):
        parse(["benchh"])


def test_swaps_name_text_the_docs_contain() -> None:
    for doc, swaps in SWAPS.items():
        text = (REPO / doc).read_text()
        assert all(old in text for old in swaps), (doc, swaps)
    assert yaml.safe_load(doc_yaml(REPO / "docs" / "keda.md", "executor: keda"))["services"][0]["executor"] == "keda"
