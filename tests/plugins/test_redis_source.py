"""The Redis source against a real redis-server (Debian's): lists, a real Celery worker's queue,
Streams with a consumer group; rates, restarts, credentials, TLS; and what `validate` says about a
plain list under the default policy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from docktor.agent.config.load import parse_config
from docktor.agent.problems import UsageError
from docktor.tools.sdk import SourceError
from docktor.tools.sources.redis import (
    CELERY_METRICS,
    CELERY_PRIORITY_SEP,
    LIST_METRICS,
    STREAM_METRICS,
    RedisSource,
)
from docktor.tools.sources.redis import RedisSettings as Settings
from tests.support.clocks import FakeClock
from tests.support.peers import REPO, free_port
from tests.support.publish_times import age_read, sent_now
from tests.support.readings import opened, settling
from tests.support.servers import Certificates, RedisServer, make_certificates

RATES = ("queue.rate_in", "queue.rate_out")
AGES = ("queue.oldest_age", "queue.oldest_in_flight_age")
CANARY = "canary-pw-8c2d"
#: between two entries: more than the 1 s agreement, so the next entry's age cannot pass for the first's
AGE_GAP = 2.5
#: Redis keeps an entry's ID time and a pending entry's idle time in whole milliseconds
MS = 0.001



@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer.start(tmp_path / "redis")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    """The test's own client (redis-py, synchronous)."""
    client = redis.Redis(port=server.port)
    yield client
    client.close()


def settings(url: str, **extra: Any) -> Settings:
    return Settings.model_validate({"kind": "redis", "url": url, "timeout": 1, **extra})


@pytest.fixture
async def make_source() -> AsyncIterator[Callable[..., RedisSource]]:
    async with opened(RedisSource) as make:
        yield make

read_settled = settling(within=30, every=0.1)


# --------------------------------------------------------------------------- settings


def test_metrics_follow_the_mode() -> None:
    assert RedisSource.metrics_for(settings("redis://h/0", list="jobs")) == LIST_METRICS
    assert RedisSource.metrics_for(settings("redis://h/0", celery_queue="celery")) == CELERY_METRICS
    assert RedisSource.metrics_for(settings("redis://h/0", stream="s", group="g")) == STREAM_METRICS
    assert not {"queue.rate_in", "queue.rate_out"} & (set(LIST_METRICS) | set(CELERY_METRICS))
    s = settings("redis://h:6380/3", celery_queue="jobs")
    assert s.keys == ["jobs", f"jobs{CELERY_PRIORITY_SEP}3", f"jobs{CELERY_PRIORITY_SEP}6", f"jobs{CELERY_PRIORITY_SEP}9"]
    assert s.db == 3


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"list": "a", "stream": "s", "group": "g"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"stream": "s"}, "go together"),
        ({"list": "a", "url": f"redis://:{CANARY}@h:6379/0"}, "no credentials in the URL"),
        ({"list": "a", "url": "redis://h:6379/zero"}, "database number"),
        ({"list": "a", "url": "http://h"}, "redis://"),
        ({"list": "a", "tls": {"ca_file": "ca.pem"}}, "rediss://"),
        ({"list": []}, "at least one key"),
        ({"list": "a", "username_env": "U"}, "needs password_env"),
        ({"list": "a", "password_env": CANARY + "!"}, "name of an environment variable"),
    ],
)
def test_settings_reject_bad_input(extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"kind": "redis", **extra})
    errors = info.value.errors()
    assert any(fragment in e["msg"] for e in errors), errors
    assert all(CANARY not in e["msg"] for e in errors)


SERVICE = """
services:
  - name: worker
    executor: local
    command: ["python", "worker.py"]
    max_replicas: 4
    {policy}
    queue: {{kind: redis, url: "redis://127.0.0.1:6379/0", {mode}}}
"""


def test_validate_names_the_policy_a_plain_list_needs() -> None:
    # A list has a backlog and nothing else: the default docktor policy cannot size from it.
    with pytest.raises(UsageError) as info:
        parse_config(SERVICE.format(policy="", mode="list: jobs"))
    text = str(info.value)
    assert "services[0].policy" in text and "queue.rate_in" in text
    assert "use policy: target (with target_per_replica) or policy: rules" in text
    # the suggested policies load
    parse_config(SERVICE.format(policy="policy: target\n    target_per_replica: 20", mode="list: jobs"))
    # a stream has rates: the default policy is fine
    parse_config(SERVICE.format(policy="", mode="stream: events, group: workers"))


def test_validate_cli_exits_2_naming_the_policy_for_a_plain_list(tmp_path: Path) -> None:
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(SERVICE.format(policy="", mode="list: jobs"))
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "validate", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "services[0].policy: policy 'docktor' needs queue.rate_in" in done.stderr
    assert "use policy: target (with target_per_replica) or policy: rules" in done.stderr
    assert "Traceback" not in done.stderr


def test_decide_once_reads_a_list_once_it_has_no_rates_to_wait_for(tmp_path: Path, server: RedisServer, r: redis.Redis) -> None:
    """``decide --once`` reads twice, a --window apart, only for rates: a list has none, so it is
    read once and decided on at once (the server counts the LLENs: one, not two)."""
    r.rpush("jobs", *range(250))
    cfg = tmp_path / "docktor.yaml"
    cfg.write_text(SERVICE.format(policy="policy: target\n    target_per_replica: 50", mode="list: jobs")
                   .replace("redis://127.0.0.1:6379/0", server.url))
    r.config_resetstat()
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", "decide", "--config", str(cfg), "--once", "--dry-run",
                           "--json", "--window", "5s"], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    assert (rec["observations"]["queue.backlog"], rec["wanted"]) == (250.0, 4), rec  # max_replicas 4
    assert r.info("commandstats")["cmdstat_llen"]["calls"] == 1


# --------------------------------------------------------------------------- lists


async def test_lists_add_up_exactly(server: RedisServer, r: redis.Redis, make_source: Any) -> None:
    r.rpush("jobs", *range(5))
    r.rpush("jobs:urgent", *range(3))
    src = make_source(settings(server.url, list=["jobs", "jobs:urgent", "jobs:absent"]))
    assert await src.read() == {"queue.pending": 8.0, "queue.backlog": 8.0}  # an absent key is an empty list
    r.lpop("jobs", 2)
    assert await make_source(settings(server.url, list="jobs")).read() == {"queue.pending": 3.0, "queue.backlog": 3.0}


async def test_a_key_of_another_type_is_named(server: RedisServer, r: redis.Redis, make_source: Any) -> None:
    r.set("jobs", "not a list")
    with pytest.raises(SourceError, match="holds another type"):
        await make_source(settings(server.url, list="jobs")).read()


async def test_database_number_is_honoured(server: RedisServer, make_source: Any) -> None:
    other = redis.Redis(port=server.port, db=3)
    other.rpush("jobs", 1, 2)
    other.close()
    assert (await make_source(settings(f"redis://127.0.0.1:{server.port}/3", list="jobs")).read())["queue.backlog"] == 2.0
    assert (await make_source(settings(server.url, list="jobs")).read())["queue.backlog"] == 0.0


# --------------------------------------------------------------------------- Celery


@pytest.fixture
def celery_worker(server: RedisServer, tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Starts real Celery workers (``celery -A tests.support.celery_app worker -Q jobs``) on the test's Redis."""
    pytest.importorskip("celery")
    procs: list[subprocess.Popen[bytes]] = []

    def start(concurrency: int) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.support.celery_app", "worker", "-Q", "jobs", "--pool", "prefork",
             "--concurrency", str(concurrency), "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "INFO", "-n", f"w{len(procs)}@%h"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "CELERY_BROKER_URL": server.url},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # warm shutdown; the held tasks go back to the queue (late acks)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def send(url: str, n: int, **options: Any) -> None:
    from tests.support.celery_app import make_app

    app = make_app(url)
    try:
        for _ in range(n):
            app.send_task("hold", queue="jobs", **options)
    finally:
        app.close()


async def test_celery_queue_counts_waiting_and_reserved_tasks_of_a_real_worker(
    server: RedisServer, r: redis.Redis, celery_worker: Any, make_source: Any
) -> None:
    send(server.url, 10)
    src = make_source(settings(server.url, celery_queue="jobs"))
    assert await src.read() == {"queue.pending": 10.0, "queue.ack_pending": 0.0, "queue.backlog": 10.0}

    celery_worker(2)  # two processes, one task each: exactly 2 reserved (late acks, prefetch 1)
    held = await read_settled(src.read, lambda m: m["queue.ack_pending"] == 2.0, within=60)
    assert held == {"queue.pending": 8.0, "queue.ack_pending": 2.0, "queue.backlog": 10.0}

    r.rpush("release", 1, 2, 3)  # three tasks finish (acked); the worker takes the next ones
    done = await read_settled(src.read, lambda m: m["queue.backlog"] == 7.0 and m["queue.ack_pending"] == 2.0, within=60)
    assert done == {"queue.pending": 5.0, "queue.ack_pending": 2.0, "queue.backlog": 7.0}
    assert int(r.get("done") or 0) == 3  # the worker's own count agrees


async def test_celery_priority_sub_queues_and_other_queues(server: RedisServer, r: redis.Redis, make_source: Any) -> None:
    send(server.url, 3)
    send(server.url, 2, priority=6)  # kombu puts these in "jobs\x06\x166"
    assert r.llen(f"jobs{CELERY_PRIORITY_SEP}6") == 2
    # someone else's reserved task (another queue) is not ours
    r.hset("unacked", "tag-1", '[{"body": "x"}, "other", "other"]')
    r.hset("unacked", "tag-2", '[{"body": "y"}, "", "jobs"]')
    r.hset("unacked", "tag-3", "not json")
    metrics = await make_source(settings(server.url, celery_queue="jobs")).read()
    assert metrics == {"queue.pending": 5.0, "queue.ack_pending": 1.0, "queue.backlog": 6.0}


# --------------------------------------------------------------------------- streams


async def test_stream_group_figures_are_exact(server: RedisServer, r: redis.Redis, make_source: Any) -> None:
    ids = [r.xadd("events", {"n": i}) for i in range(10)]
    r.xgroup_create("events", "workers", id="0")
    got = r.xreadgroup("workers", "c1", {"events": ">"}, count=7)  # M = 7 delivered
    assert len(got[0][1]) == 7
    r.xack("events", "workers", *ids[:3])  # K = 3 acknowledged
    src = make_source(settings(server.url, stream="events", group="workers"))
    got = await src.read()
    assert all(got.pop(k) >= 0 for k in AGES)  # their values: test_stream_ages_agree_with_the_producers_times_*
    assert got == {
        "queue.lag": 3.0,  # not yet delivered
        "queue.pending": 3.0,
        "queue.ack_pending": 4.0,  # delivered, not acked
        "queue.backlog": 7.0,
        "queue.consumers": 1.0,
    }
    assert src.last_reset == "first reading"


async def test_stream_ages_agree_with_the_producers_times_and_follow_the_group(
    server: RedisServer, r: redis.Redis, make_source: Any
) -> None:
    r.xgroup_create("events", "workers", id="$", mkstream=True)
    src = make_source(settings(server.url, stream="events", group="workers"))
    got = await src.read()
    # empty: nothing waits and nothing is held, 0 (a rule on an age lets an empty stream scale in)
    assert (got["queue.oldest_age"], got["queue.oldest_in_flight_age"]) == (0.0, 0.0)

    first = sent_now(lambda: r.xadd("events", {"n": 1}))
    await asyncio.sleep(AGE_GAP)
    second = sent_now(lambda: r.xadd("events", {"n": 2}))
    await asyncio.sleep(AGE_GAP)
    assert await age_read(src.read, first, resolution=MS) >= 2 * AGE_GAP - 1.0
    assert (await src.read())["queue.oldest_in_flight_age"] == 0.0  # none handed out yet

    taken = sent_now(lambda: r.xreadgroup("workers", "c1", {"events": ">"}, count=1))  # a worker takes the oldest
    await asyncio.sleep(AGE_GAP)
    await age_read(src.read, second, resolution=MS)  # within 1 s of the next entry's age: AGE_GAP from the first's
    assert await age_read(src.read, taken, "queue.oldest_in_flight_age", resolution=MS) >= AGE_GAP - 1.0  # XPENDING's idle time

    ((_, entries),) = r.xreadgroup("workers", "c1", {"events": ">"}, count=1)
    r.xack("events", "workers", *[entry_id for entry_id, _ in entries])
    got = await src.read()
    assert got["queue.oldest_age"] == 0.0  # none waits
    assert got["queue.oldest_in_flight_age"] >= AGE_GAP  # the first entry is still held, unacknowledged


async def test_stream_rates_over_a_known_interval(server: RedisServer, r: redis.Redis, make_source: Any) -> None:
    clock = FakeClock()
    r.xgroup_create("events", "workers", id="0", mkstream=True)
    src = make_source(settings(server.url, stream="events", group="workers"), clock)
    assert not set(RATES) & (await src.read()).keys()

    for i in range(6):
        r.xadd("events", {"n": i})
    clock.advance(2.0)
    second = await src.read()
    assert (second["queue.rate_in"], second["queue.rate_out"]) == (3.0, 0.0)

    got = r.xreadgroup("workers", "c1", {"events": ">"}, count=6)
    r.xack("events", "workers", *[m[0] for m in got[0][1][:4]])  # 6 delivered, 4 done
    clock.advance(2.0)
    third = await src.read()
    assert (third["queue.rate_in"], third["queue.rate_out"]) == (0.0, 2.0)
    assert (third["queue.lag"], third["queue.ack_pending"], third["queue.backlog"]) == (0.0, 2.0, 2.0)


async def test_recreated_stream_omits_rates_and_missing_ones_are_named(server: RedisServer, r: redis.Redis, make_source: Any) -> None:
    clock = FakeClock()
    r.xgroup_create("events", "workers", id="0", mkstream=True)
    for i in range(10):
        r.xadd("events", {"n": i})
    src = make_source(settings(server.url, stream="events", group="workers"), clock)
    await src.read()

    r.delete("events")
    with pytest.raises(SourceError, match="stream 'events' not found"):
        await src.read()
    r.xgroup_create("events", "workers", id="0", mkstream=True)
    for i in range(14):  # more than before: only the gap tells
        r.xadd("events", {"n": i})
    clock.advance(2.0)
    after = await src.read()
    assert not set(RATES) & after.keys() and after["queue.lag"] == 14.0
    assert src.last_reset == "stream re-created"

    r.delete("events")  # re-created unseen, with fewer entries: never a negative rate
    r.xgroup_create("events", "workers", id="0", mkstream=True)
    r.xadd("events", {"n": 0})
    clock.advance(2.0)
    again = await src.read()
    assert not set(RATES) & again.keys() and "backwards" in (src.last_reset or "")

    with pytest.raises(SourceError, match="consumer group 'nobody' not found on stream 'events'"):
        await make_source(settings(server.url, stream="events", group="nobody")).read()


# --------------------------------------------------------------------------- faults, credentials, TLS


async def test_nothing_listening_raises_source_error(make_source: Any) -> None:
    src = make_source(settings(f"redis://127.0.0.1:{free_port()}/0", list="jobs"))
    with pytest.raises(SourceError, match="cannot reach Redis at redis://127.0.0.1"):
        await src.read()


async def test_restart_reads_missing_then_exact_again(tmp_path: Path, make_source: Any) -> None:
    server = RedisServer.start(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    try:
        client = redis.Redis(port=server.port)
        ids = [client.xadd("events", {"n": i}) for i in range(8)]
        client.xgroup_create("events", "workers", id="0")
        client.xreadgroup("workers", "c1", {"events": ">"}, count=5)
        client.xack("events", "workers", *ids[:2])
        client.close()
        clock = FakeClock()
        src = make_source(settings(server.url, stream="events", group="workers"), clock)
        before = await src.read()
        assert (before["queue.lag"], before["queue.ack_pending"]) == (3.0, 3.0)

        server.stop()
        with pytest.raises(SourceError, match="cannot reach Redis"):
            await src.read()

        server.launch()  # same port, same folder: the append-only file brings the stream back
        clock.advance(5.0)
        after = await read_settled(src.read, lambda m: True)
        assert {k: after[k] for k in before if k not in AGES} == {k: v for k, v in before.items() if k not in AGES}
        assert after["queue.oldest_age"] >= before["queue.oldest_age"]  # the same entries, older now
        assert (after["queue.rate_in"], after["queue.rate_out"]) == (0.0, 0.0)  # same counters: a real zero
    finally:
        server.stop()


async def test_password_from_the_environment_and_a_wrong_one(tmp_path: Path, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisServer.start(tmp_path / "redis", "--requirepass", "right-pass")
    try:
        redis.Redis(port=server.port, password="right-pass").rpush("jobs", 1, 2, 3)
        monkeypatch.setenv("REDIS_PASS", "right-pass")
        ok = await make_source(settings(server.url, list="jobs", password_env="REDIS_PASS")).read()
        assert ok["queue.backlog"] == 3.0

        monkeypatch.setenv("REDIS_PASS", CANARY)
        with pytest.raises(SourceError, match=r"refused the (credentials|request) \(password from REDIS_PASS\)") as info:
            await make_source(settings(server.url, list="jobs", password_env="REDIS_PASS")).read()
        assert CANARY not in str(info.value)

        with pytest.raises(SourceError, match="no password configured") as info:
            await make_source(settings(server.url, list="jobs")).read()
        monkeypatch.delenv("REDIS_PASS")
        with pytest.raises(SourceError, match=r"environment variable REDIS_PASS \(password_env\) is not set"):
            await make_source(settings(server.url, list="jobs", password_env="REDIS_PASS")).read()
    finally:
        server.stop()


async def test_acl_user_from_the_environment(server: RedisServer, r: redis.Redis, make_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    r.acl_setuser("docktor", enabled=True, passwords=["+acl-pass"], keys=["jobs*"], commands=["+llen", "+multi", "+exec", "+hvals"])
    r.rpush("jobs", 1, 2)
    monkeypatch.setenv("REDIS_USER", "docktor")
    monkeypatch.setenv("REDIS_PASS", "acl-pass")
    creds = {"username_env": "REDIS_USER", "password_env": "REDIS_PASS"}
    assert (await make_source(settings(server.url, list="jobs", **creds)).read())["queue.backlog"] == 2.0
    monkeypatch.setenv("REDIS_PASS", CANARY)
    with pytest.raises(SourceError, match=r"\(user from REDIS_USER\)") as info:
        await make_source(settings(server.url, list="jobs", **creds)).read()
    assert CANARY not in str(info.value)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


async def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path, certs: Certificates, make_source: Any) -> None:
    server = RedisServer.start(tmp_path / "redis", tls=certs)
    try:
        redis.Redis(port=server.port).rpush("jobs", 1, 2, 3, 4)
        url = f"rediss://127.0.0.1:{server.tls_port}/0"
        tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
        assert (await make_source(settings(url, list="jobs", tls=tls)).read())["queue.backlog"] == 4.0
        # a server whose certificate the configured CA did not sign is refused
        with pytest.raises(SourceError, match="certificate verify failed|CERTIFICATE_VERIFY_FAILED"):
            await make_source(settings(url, list="jobs", tls={**tls, "ca_file": str(certs.other_ca)})).read()
        with pytest.raises(SourceError, match=r"tls\.ca_file: .*absent\.pem does not exist"):
            await make_source(settings(url, list="jobs", tls={"ca_file": str(tmp_path / "absent.pem")})).read()
    finally:
        server.stop()
