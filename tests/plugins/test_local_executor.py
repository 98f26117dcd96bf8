"""The local executor with real child processes: small Python programs that report what they saw.

Each replica runs ``WORKER`` (``python -c``), which writes ``ready-<replica>`` into a folder once
its SIGTERM handler is installed, ``term-<replica>`` when SIGTERM arrives, and appends a line to
``starts-<replica>`` at every start. Nothing here asserts durations; only outcomes and orderings.
A daemon killed hard and restarted is in test_local_adoption.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.executors import procfs
from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.executors.local_cpu import SCAN_REUSE_S
from docktor.tools.sdk import Context, ExecutorError
from tests.support.peers import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

WORKER = r"""
import os, signal, sys, time, pathlib
out, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
r = os.environ["DOCKTOR_REPLICA"]

def put(name, text):
    tmp = out / (name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out / name)

def on_term(*_):
    put("term-" + r, "")
    if mode != "ignore-term":
        sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
starts = out / ("starts-" + r)
first = not starts.exists()
with open(starts, "a") as f:
    f.write("start\n")
print("out", r, flush=True)
print("err", r, file=sys.stderr, flush=True)
put("ready-" + r, " ".join([str(os.getpid()), os.environ["DOCKTOR_SERVICE"], os.getcwd(), os.environ.get("GREETING", "-")]))
if mode == "crash" or (mode == "crash-once" and first):
    time.sleep(0.3)
    sys.exit(1)
while True:
    time.sleep(0.05)
"""


def worker(out: Path, mode: str = "run") -> list[str]:
    return [sys.executable, "-c", WORKER, str(out), mode]


def alive(pid: int) -> bool:
    """True while ``pid`` is a live process; a zombie nobody reaped yet counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: signal 0 succeeded, so assume it lives
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ready(out: Path, replica: int) -> list[str] | None:
    f = out / f"ready-{replica}"
    return f.read_text().split() if f.exists() else None


async def wait_ready(out: Path, *replicas: int) -> dict[int, list[str]]:
    found = {}
    for r in replicas:
        found[r] = await eventually(f"replica {r} to start", lambda r=r: ready(out, r), timeout=15.0)
    return found


def starts(out: Path, replica: int) -> int:
    f = out / f"starts-{replica}"
    return len(f.read_text().splitlines()) if f.exists() else 0


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., LocalExecutor]]:
    """Builds executors and always closes them, so a failing test leaves no processes behind."""
    made: list[LocalExecutor] = []

    def build(command: list[str], stop_grace_period: float = 5.0, **kwargs: Any) -> LocalExecutor:
        kwargs.setdefault("settle", 0.2)
        settings = LocalSettings(kind="local", command=command, stop_grace_period=stop_grace_period)
        ex = LocalExecutor(settings, Context("worker", tmp_path, tmp_path / "state"), **kwargs)
        made.append(ex)
        return ex

    yield build
    for ex in made:
        await ex.close()


async def test_scale_up_runs_replicas_with_their_index_env_cwd_and_logs(tmp_path: Path, out: Path) -> None:
    (tmp_path / "sub").mkdir()
    settings = LocalSettings(kind="local", command=worker(out), env={"GREETING": "hello"}, working_dir=Path("sub"))
    ex = LocalExecutor(settings, Context("worker", tmp_path, tmp_path / "state"))
    try:
        outcome = await ex.scale(3)
        assert outcome.ok, outcome.message
        assert outcome.running == 3
        seen = await wait_ready(out, 1, 2, 3)
        status = await ex.status()
    finally:
        await ex.close()

    assert (status.desired, status.running, status.failed, status.healthy) == (3, 3, 0, True)
    for r, (pid, service, cwd, greeting) in seen.items():
        assert service == "worker"
        assert Path(cwd) == tmp_path / "sub"
        assert greeting == "hello"
        log = (tmp_path / "state" / "logs" / f"worker.{r}.log").read_text()
        assert f"out {r}\n" in log and f"err {r}\n" in log
        assert f"started, pid {pid}" in log
    assert len({pid for pid, *_ in seen.values()}) == 3


async def test_scale_down_terminates_newest_replicas_and_keeps_the_first(make: Callable[..., LocalExecutor], out: Path) -> None:
    ex = make(worker(out))
    assert (await ex.scale(3)).ok
    pids = {r: int(v[0]) for r, v in (await wait_ready(out, 1, 2, 3)).items()}

    outcome = await ex.scale(1)

    assert outcome.ok, outcome.message
    assert "stopped 3, 2" in outcome.message
    assert outcome.running == 1
    assert (out / "term-3").exists() and (out / "term-2").exists()
    assert not (out / "term-1").exists()
    assert not alive(pids[3]) and not alive(pids[2])
    assert alive(pids[1])
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (1, 1, 0)


async def test_replica_ignoring_sigterm_is_killed_after_grace_and_all_stop_together(
    make: Callable[..., LocalExecutor], out: Path, tmp_path: Path
) -> None:
    ex = make(worker(out, "ignore-term"), stop_grace_period=0.3)
    assert (await ex.scale(3)).ok
    pids = [int(v[0]) for v in (await wait_ready(out, 1, 2, 3)).values()]

    outcome = await ex.scale(0)

    assert outcome.ok, outcome.message
    assert "SIGKILL" in outcome.message
    assert outcome.running == 0
    assert all((out / f"term-{r}").exists() for r in (1, 2, 3)), "each replica got SIGTERM first"
    assert not any(alive(pid) for pid in pids)
    # Concurrent, not one grace period after another: every SIGTERM went out before any SIGKILL.
    term_at, kill_at = [], []
    for r in (1, 2, 3):
        for line in (tmp_path / "state" / "logs" / f"worker.{r}.log").read_text().splitlines():
            if line.startswith("[docktor "):
                stamp = datetime.fromisoformat(line.split()[1].rstrip("]"))
                if "sending SIGTERM" in line:
                    term_at.append(stamp)
                elif "sending SIGKILL" in line:
                    kill_at.append(stamp)
    assert len(term_at) == 3 and len(kill_at) == 3
    assert max(term_at) <= min(kill_at)


async def test_crashing_replica_counts_as_failed_and_is_restarted_after_backoff(
    make: Callable[..., LocalExecutor], out: Path
) -> None:
    ex = make(worker(out, "crash"), settle=0.05)
    assert (await ex.scale(1)).ok

    async def crashed() -> Any:
        s = await ex.status()
        return s if s.failed == 1 and s.running == 0 else None

    status = await eventually("the crash to show in status", crashed, timeout=15.0)
    assert status.desired == 1
    assert "replica 1 exited with code 1" in status.detail
    assert "restart #1" in status.detail

    async def restarted() -> bool:
        await ex.status()  # status() is what reconciles
        return starts(out, 1) >= 2

    await eventually("the crashed replica to be restarted", restarted, timeout=15.0)


async def test_restart_backoff_doubles_per_crash_scripted_clock(make: Callable[..., LocalExecutor], out: Path) -> None:
    # Real processes crash for real; only the executor's clock is scripted, so the back-off can be
    # read exactly instead of waited for.
    now = [1000.0]
    ex = make(worker(out, "crash"), settle=0.05, clock=lambda: now[0])
    assert (await ex.scale(1)).ok

    for attempt, delay in ((1, 1), (2, 2), (3, 4)):

        async def down(attempt: int = attempt) -> Any:
            s = await ex.status()
            return s if s.running == 0 and f"restart #{attempt}" in s.detail else None

        status = await eventually(f"crash number {attempt}", down, timeout=15.0)
        assert f"restart #{attempt} in {delay} s" in status.detail
        assert status.failed == 1
        now[0] += delay - 0.5
        early = await ex.status()
        assert early.running == 0, "restarted before its back-off had passed"
        now[0] += 0.5
        assert (await ex.status()).running == 1
        await eventually(f"restart number {attempt}", lambda attempt=attempt: starts(out, 1) == attempt + 1, timeout=15.0)


async def test_replica_that_stays_up_after_restart_is_no_longer_failed_scripted_clock(
    make: Callable[..., LocalExecutor], out: Path
) -> None:
    now = [1000.0]
    ex = make(worker(out, "crash-once"), settle=0.05, clock=lambda: now[0])
    assert (await ex.scale(1)).ok

    async def down() -> Any:
        s = await ex.status()
        return s if s.running == 0 and s.failed == 1 else None

    await eventually("the first crash", down, timeout=15.0)
    now[0] += 1
    status = await ex.status()
    assert (status.running, status.failed) == (1, 1)
    assert "restarted" in status.detail
    now[0] += 10
    status = await ex.status()
    assert (status.running, status.failed, status.detail) == (1, 0, "")


async def test_missing_command_gives_failed_outcome_naming_it(make: Callable[..., LocalExecutor]) -> None:
    ex = make(["docktor-no-such-command-xyz", "--flag"])

    outcome = await ex.scale(2)

    assert not outcome.ok
    assert "command not found: docktor-no-such-command-xyz" in outcome.message
    assert outcome.running == 0
    status = await ex.status()
    assert (status.desired, status.running, status.failed, status.healthy) == (2, 0, 2, False)
    assert "docktor-no-such-command-xyz" in status.detail


async def test_non_executable_command_gives_failed_outcome(make: Callable[..., LocalExecutor], tmp_path: Path) -> None:
    script = tmp_path / "worker.sh"
    script.write_text("#!/bin/sh\nsleep 60\n")
    script.chmod(0o644)
    ex = make([str(script)])

    outcome = await ex.scale(1)

    assert not outcome.ok
    assert "permission denied" in outcome.message and str(script) in outcome.message


async def test_immediately_exiting_command_gives_failed_outcome(make: Callable[..., LocalExecutor]) -> None:
    false = shutil.which("false")
    assert false, "coreutils 'false' not on PATH"
    ex = make([false], settle=0.5)

    outcome = await ex.scale(1)

    assert not outcome.ok
    assert "replica 1 exited with code 1 right after start" in outcome.message
    assert outcome.running == 0
    status = await ex.status()
    assert (status.running, status.failed) == (0, 1)


async def test_scale_to_zero_and_negative(make: Callable[..., LocalExecutor], out: Path) -> None:
    ex = make(worker(out))
    assert (await ex.scale(2)).ok
    pids = [int(v[0]) for v in (await wait_ready(out, 1, 2)).values()]

    assert not (await ex.scale(-1)).ok
    outcome = await ex.scale(0)

    assert outcome.ok and outcome.running == 0
    assert not any(alive(pid) for pid in pids)
    status = await ex.status()
    assert (status.desired, status.running, status.failed) == (0, 0, 0)


CHILD_SPAWNER = r"""
import os, subprocess, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
r = os.environ["DOCKTOR_REPLICA"]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
tmp = out / ("ready-" + r + ".tmp")
tmp.write_text(f"{os.getpid()} {child.pid}")
os.replace(tmp, out / ("ready-" + r))
time.sleep(600)
"""


async def test_close_leaves_no_processes_including_grandchildren_and_is_idempotent(
    make: Callable[..., LocalExecutor], out: Path
) -> None:
    ex = make([sys.executable, "-c", CHILD_SPAWNER, str(out)], stop_grace_period=0.3)
    assert (await ex.scale(2)).ok
    pids = [int(p) for v in (await wait_ready(out, 1, 2)).values() for p in v]
    assert len(pids) == 4 and all(alive(p) for p in pids)

    await ex.close()
    await ex.close()

    await eventually("every replica and grandchild to die", lambda: not any(alive(p) for p in pids), timeout=5)
    with pytest.raises(ExecutorError):
        await ex.status()
    assert not (await ex.scale(1)).ok


async def test_grandchildren_of_a_crashed_replica_are_stopped_too(make: Callable[..., LocalExecutor], out: Path) -> None:
    # the replica starts a long-lived child, then crashes: the child must not live on as an orphan
    crash_after_child = CHILD_SPAWNER.rsplit("time.sleep(600)", 1)[0] + "time.sleep(0.5)\nsys.exit(3)\n"
    ex = make([sys.executable, "-c", crash_after_child, str(out)], stop_grace_period=0.5, restart_backoff=60)
    assert (await ex.scale(1)).ok
    leader, child = (int(p) for p in (await wait_ready(out, 1))[1])

    async def crashed() -> bool:
        return (await ex.status()).failed == 1

    await eventually("the replica to crash", crashed, timeout=15.0)
    await eventually("the crashed replica's child to be stopped", lambda: not alive(child), timeout=15.0)
    assert not alive(leader)
    log = (out.parent / "state" / "logs" / "worker.1.log").read_text()
    assert "processes it started are still running: stopping them" in log


# --------------------------------------------------------------------------- the replica's environment

ENV_DUMP = r"""
import json, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
tmp = out / "env.tmp"
tmp.write_text(json.dumps(dict(os.environ)))
os.replace(tmp, out / ("env-" + os.environ["DOCKTOR_REPLICA"]))
time.sleep(600)
"""


async def test_replica_gets_its_env_and_the_allow_list_never_docktor_secrets(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canaries = {
        "DOCKTOR_CANARY_LLM_KEY": "canary-llm-9f3b1c",  # llm.api_key_env
        "DOCKTOR_CANARY_NATS_PASSWORD": "canary-nats-77ad2e",  # a source's password_env
        "UNLISTED_VARIABLE": "canary-unlisted-5c1e",  # neither allowed nor given
    }
    for k, v in {**canaries, "LC_TIME": "C", "TZ": "UTC", "MYAPP_MODE": "fast", "LANG": "C.UTF-8"}.items():
        monkeypatch.setenv(k, v)
    settings = LocalSettings(
        kind="local",
        command=[sys.executable, "-c", ENV_DUMP, str(out)],
        env={"GIVEN": "by-config"},
        # a user who lets a secret's name through by pattern still does not get it
        env_passthrough=["MYAPP_*", "DOCKTOR_CANARY_*"],
    )
    context = Context("worker", tmp_path, tmp_path / "state", secret_env=frozenset(list(canaries)[:2]))
    ex = LocalExecutor(settings, context)
    try:
        assert (await ex.scale(1)).ok
        env_file = await eventually("the replica's environment", lambda: (out / "env-1").exists() and out / "env-1", timeout=15.0)
        seen = json.loads(env_file.read_text())
    finally:
        await ex.close()

    for name, value in canaries.items():
        assert name not in seen
        assert value not in json.dumps(seen)
    assert seen["GIVEN"] == "by-config"
    assert seen["MYAPP_MODE"] == "fast"
    assert (seen["LC_TIME"], seen["TZ"], seen["LANG"]) == ("C", "UTC", "C.UTF-8")
    assert seen["PATH"] == os.environ["PATH"]
    assert (seen["DOCKTOR_SERVICE"], seen["DOCKTOR_REPLICA"]) == ("worker", "1")
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV",
               "SSL_CERT_FILE", "SSL_CERT_DIR", "GIVEN", "MYAPP_MODE", "DOCKTOR_SERVICE", "DOCKTOR_REPLICA", "DOCKTOR_OWNER",
               "DOCKTOR_INSTANCE"}
    unexpected = {k for k in seen if k not in allowed and not k.startswith(("LC_", "PYTHON"))}
    assert unexpected <= {"LC_CTYPE"}, unexpected  # (Python may set LC_CTYPE itself)


def test_check_warns_when_env_passthrough_names_a_secret(tmp_path: Path) -> None:
    settings = LocalSettings(kind="local", command=["true"], env_passthrough=["OPENAI_*", "MYAPP_*"])
    context = Context("worker", tmp_path, tmp_path / "state", secret_env=frozenset({"OPENAI_API_KEY"}))
    warnings = LocalExecutor.check(settings, context)
    assert len(warnings) == 1
    assert "'OPENAI_*' matches OPENAI_API_KEY" in warnings[0] and "never passed to replicas" in warnings[0]


def test_env_passthrough_rejects_what_is_not_a_name_or_pattern() -> None:
    with pytest.raises(ValueError, match="not a variable name or a pattern"):
        LocalSettings(kind="local", command=["true"], env_passthrough=["PATH=/bin"])


# --------------------------------------------------------------------------- which replicas go first

BUSY_OR_IDLE = r"""
import os, pathlib, signal, sys, time
out, busy = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
r = os.environ["DOCKTOR_REPLICA"]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
(out / ("ready-" + r)).write_text(str(os.getpid()))
while True:
    if r in busy:
        sum(i * i for i in range(10000))  # a replica with work in hand
    else:
        time.sleep(0.05)                  # an idle one, waiting for work
"""


async def test_scale_in_removes_the_idlest_replicas_and_says_why(make: Callable[..., LocalExecutor], out: Path) -> None:
    # replica 3 is busy: the highest number, which the executor used to remove first
    ex = make([sys.executable, "-c", BUSY_OR_IDLE, str(out), "3"])
    assert (await ex.scale(3)).ok
    await wait_ready(out, 1, 2, 3)
    # a scan of /proc up to SCAN_REUSE_S old serves a measurement (every service's executor
    # measures at the same instant); one made before the replicas started (by an earlier test in
    # this process) would see none of them, and they would stay unmeasured: wait it out
    await asyncio.sleep(SCAN_REUSE_S * 1.5)

    await ex.status()  # each status() is a CPU measurement, as each tick is
    await asyncio.sleep(1.2)  # a measurement covers at least a second
    await ex.status()

    outcome = await ex.scale(1)

    assert outcome.ok, outcome.message
    # the busy replica 3 is kept; the two idle ones go in the order of the rule
    # (scale_in.idlest_first: whole percent, ties to the higher number) over the figures measured:
    # an idle replica's 0.9 % and another's 1.1 % are different whole percents on a busy machine,
    # so which of them goes first is the measurement's, not fixed (the tie rule itself:
    # tests/unit/test_idlest_first.py)
    assert sorted(r.replica for r in outcome.removed) == ["1", "2"]
    assert all(r.why.startswith("lowest CPU: ") for r in outcome.removed)
    measured = [(int(float(r.why.split("lowest CPU: ")[1].split("%")[0])), -int(r.replica)) for r in outcome.removed]
    assert measured == sorted(measured)
    assert "3: " in outcome.removed[0].why  # the kept busy one is named with its CPU
    assert all("after SIGTERM" in r.stopped for r in outcome.removed)
    remaining = await ex.status()
    assert (remaining.desired, remaining.running) == (1, 1)
    assert alive(int((out / "ready-3").read_text()))
    assert not any(alive(int((out / f"ready-{r}").read_text())) for r in (1, 2))


def test_one_scan_of_proc_serves_the_measurements_made_within_its_age() -> None:
    # every service's executor measures at the same instants: one scan of /proc serves them all
    made, scan = procfs.recent_scan(60.0)
    assert procfs.recent_scan(60.0) == (made, scan)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # the shared scan predates the process, a fresh one (no age allowed) sees it
        assert procfs.by_session({sleeper.pid}, scan)[sleeper.pid] == []
        fresh_at, fresh = procfs.recent_scan(0.0)
        assert fresh_at > made
        assert [p.pid for p in procfs.by_session({sleeper.pid}, fresh)[sleeper.pid]] == [sleeper.pid]
        assert [p.pid for p in procfs.by_session({sleeper.pid})[sleeper.pid]] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_daemon_with_canary_secrets_passes_none_to_its_replicas(tmp_path: Path, out: Path) -> None:
    """The real daemon, with an LLM key and a NATS password in its environment, starts replicas."""
    from tests.support.peers import start_nats

    server = start_nats(tmp_path / "js", "--user", "docktor", "--pass", "canary-nats-pw-41c7")
    daemon = None
    try:
        config = tmp_path / "docktor.yaml"
        config.write_text(
            textwrap.dedent(
                f"""
                state_dir: {tmp_path / 'state'}
                llm:
                  provider: openai-compatible
                  base_url: http://127.0.0.1:{free_port()}/v1   # nothing listens: the advice falls back
                  model: none
                  api_key_env: CANARY_LLM_KEY
                  timeout: 1s
                services:
                  - name: worker
                    executor: local
                    command: {json.dumps([sys.executable, "-c", ENV_DUMP, str(out)])}
                    env: {{GIVEN: by-config}}
                    min_replicas: 2
                    check_interval: 0.5s
                    policy: rules
                    queue: {{kind: nats, url: "{server.url}", stream: S, consumer: C,
                             user_env: CANARY_NATS_USER, password_env: CANARY_NATS_PASSWORD}}
                """
            )
        )
        secrets = {"CANARY_LLM_KEY": "canary-llm-key-8d02", "CANARY_NATS_PASSWORD": "canary-nats-pw-41c7"}
        env = {**os.environ, **secrets, "CANARY_NATS_USER": "docktor", "MY_UNLISTED": "canary-unlisted-3f"}
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("docktor")), "daemon", "start", "--config", str(config), "--foreground"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not ((out / "env-1").exists() and (out / "env-2").exists()):
            assert daemon.poll() is None, "the daemon exited"
            assert time.monotonic() < deadline, "the replicas never started"
            time.sleep(0.1)
        for r in (1, 2):
            seen = json.loads((out / f"env-{r}").read_text())
            text = json.dumps(seen)
            assert not any(v in text for v in [*secrets.values(), "canary-unlisted-3f"])
            assert not {"CANARY_LLM_KEY", "CANARY_NATS_PASSWORD", "MY_UNLISTED"} & seen.keys()
            assert seen["GIVEN"] == "by-config" and seen["PATH"] == os.environ["PATH"]
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        server.stop()


# --------------------------------------------------------------------------- what leaves the replica's session, and file modes

# Each replica starts a child that calls setsid: it leaves the replica's session and process group,
# so signalling the group misses it; the marker in its environment finds it.
SETSID_SPAWNER = r"""
import os, subprocess, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
r = os.environ["DOCKTOR_REPLICA"]
escaped = subprocess.Popen(["setsid", "sleep", "1000"])
tmp = out / ("ready-" + r + ".tmp")
tmp.write_text(f"{os.getpid()} {escaped.pid}")
os.replace(tmp, out / ("ready-" + r))
time.sleep(600)
"""


def own_session(pid: int) -> bool:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]) == pid


async def test_setsid_grandchildren_are_stopped_with_their_replica_at_scale_in_and_close(
    make: Callable[..., LocalExecutor], out: Path
) -> None:
    ex = make([sys.executable, "-c", SETSID_SPAWNER, str(out)], stop_grace_period=2.0)
    assert (await ex.scale(2)).ok
    (one, one_escaped), (two, two_escaped) = ((int(a), int(b)) for a, b in (await wait_ready(out, 1, 2)).values())
    assert own_session(one_escaped) and own_session(two_escaped)

    outcome = await ex.scale(1)  # replica 2 goes: its escaped child with it, replica 1's stays
    assert outcome.ok, outcome.message
    assert not alive(two) and not alive(two_escaped), "a setsid grandchild outlived its replica's stop"
    assert alive(one) and alive(one_escaped)

    await ex.close()
    assert not alive(one) and not alive(one_escaped), "a setsid grandchild outlived the executor's close"


async def test_replica_logs_and_records_are_private_and_a_planted_link_is_not_followed(tmp_path: Path, out: Path) -> None:
    state = tmp_path / "state"
    # as an older Docktor left them: readable by every user
    (state / "logs").mkdir(parents=True, mode=0o755)
    (state / "local").mkdir(mode=0o755)
    (state / "logs" / "worker.1.log").write_text("an older line\n")
    (state / "logs" / "worker.1.log").chmod(0o644)
    target = tmp_path / "not-a-log"
    target.write_text("untouched\n")
    (state / "logs" / "worker.2.log").symlink_to(target)
    ex = LocalExecutor(LocalSettings(kind="local", command=worker(out)), Context("worker", tmp_path, state), settle=0.2)
    try:
        outcome = await ex.scale(2)
        await wait_ready(out, 1)
    finally:
        await ex.close()

    assert not outcome.ok and "replica 2: cannot open log file" in outcome.message and "symbolic link" in outcome.message
    assert target.read_text() == "untouched\n"
    modes = {p.relative_to(state).as_posix(): p.lstat().st_mode & 0o777 for p in state.rglob("*") if not p.is_symlink()}
    assert modes == {
        "logs": 0o700, "logs/worker.1.log": 0o600,
        "local": 0o700, "local/worker.json": 0o600, "local/worker.lock": 0o600,
    }
