"""What the local executor's replicas get and leave behind, with real child processes: no process
left after close (grandchildren, a crashed replica's children, ``setsid`` escapees), the environment
(the allow-list, never Docktor's secrets, even from a real daemon), and private logs and records
whose planted link is not followed.

Scaling, crashes and restarts: test_local_executor_scaling.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from docktor.tools.executors.local import LocalExecutor, LocalSettings
from docktor.tools.sdk import Context, ExecutorError
from tests.support.local_executor_setup import *  # noqa: F403  (fixtures, found by name: make, out)
from tests.support.local_executor_setup import alive, wait_ready, worker
from tests.support.peers import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


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
