"""Each service's state across restarts (``agent/runtime/persist.py``): what is kept, what is
discarded and why, time spent down counted, the write-ahead log read back, and the state file on
a real full disk. The daemon-level kill -9 tests are in tests/runtime/test_restart.py."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.config.model import DocktorConfig, LLMConfig, ServiceConfig
from docktor.agent.core.guardrails import Gate, envelope
from docktor.agent.core.state import ServiceState
from docktor.agent.runtime import service_loop
from docktor.agent.runtime.identity import Identity, llm_identity
from docktor.agent.runtime.persist import Breaker, SavedState, StateStore, capture, restore
from docktor.agent.runtime.restore import fold, read_log_tail
from docktor.agent.runtime.supervisor import Supervisor
from docktor.agent.timestamps import rfc3339
from tests.support.clocks import FakeClock
from tests.support.jetstream import make_stream, publish
from tests.support.peers import NatsServer, SmallDisk

SERVICE = """
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: {min}
    max_replicas: {max}
    check_interval: 1s
    policy: {policy}
    cooldown_up: {cooldown_up}
    cooldown_down: 30s
    scale_down_stabilization: 60s
    queue: {{kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 100}}]
"""


def config(tmp_path: Path, **over: Any) -> DocktorConfig:
    values = {"python": sys.executable, "min": 1, "max": 10, "policy": "rules", "cooldown_up": "120s",
              "url": "nats://127.0.0.1:4222", **over}
    return parse_config(SERVICE.format(**values), tmp_path / "docktor.yaml", {})


def svc_of(cfg: DocktorConfig) -> ServiceConfig:
    return cfg.services[0]


def ident(svc: ServiceConfig, llm: LLMConfig | None = None) -> Identity:
    return Identity.of(svc, None, llm or LLMConfig())


OPEN = Gate(up=True, down=True)


def saved(svc: ServiceConfig, state: ServiceState, *, wall: float, mono: float, **extra: Any) -> dict[str, Any]:
    doc = capture(SavedState(ident(svc), state, **extra), service=svc.name, window=svc.scale_down_stabilization, wall=wall, mono=mono)
    return json.loads(json.dumps(doc))  # as the file holds it


# --------------------------------------------------------------------------- the guardrails across a restart


def test_cooldown_counts_the_time_spent_down(tmp_path: Path) -> None:
    svc = svc_of(config(tmp_path))
    state = ServiceState(last_up_at=100.0)  # the old process's monotonic clock
    doc = saved(svc, state, wall=10_000.0, mono=110.0)  # saved 10 s after the scale-up

    # the new process: another monotonic clock; 50 s of wall time went by while nothing ran
    back = restore(doc, ident(svc), svc, wall=10_050.0, mono=7.0)
    env = envelope(svc, back.saved.state, 3, OPEN, 7.0)
    assert (env.hi, env.hi_by) == (3, "cooldown_up")  # 60 s after the scale-up: 60 s of cooldown left
    assert back.saved.state.last_up_at == pytest.approx(7.0 - 60.0)
    later = envelope(svc, back.saved.state, 3, OPEN, 7.0 + 60.5)
    assert later.hi_by == "step_limit"  # and not a second longer than that

    # down for longer than the cooldown: nothing holds it back any more
    long_after = restore(doc, ident(svc), svc, wall=10_200.0, mono=7.0)
    assert envelope(svc, long_after.saved.state, 3, OPEN, 7.0).hi_by == "step_limit"


def test_stabilization_window_survives_a_restart(tmp_path: Path) -> None:
    svc = svc_of(config(tmp_path))
    state = ServiceState()
    for t, n in [(0.0, 6), (10.0, 6), (20.0, 3), (30.0, 3)]:
        state.recommendations.append((t, n))
    doc = saved(svc, state, wall=5_000.0, mono=30.0)
    back = restore(doc, ident(svc), svc, wall=5_015.0, mono=1.0)  # 15 s down: the 6s are 45 and 35 s old
    env = envelope(svc, back.saved.state, 6, OPEN, 1.0, proposal=2)
    assert (env.lo, env.lo_by) == (6, "stabilization")
    # 61 s after the last 6 was recommended (35 s before the restart), the window lets go
    env = envelope(svc, back.saved.state, 6, OPEN, 1.0 + 26.0, proposal=2)
    assert (env.lo, env.lo_by) == (5, "step_limit")  # down one step; the window's 3s no longer hold it at 6


def test_backoff_and_breaker_deadlines_survive(tmp_path: Path) -> None:
    svc = svc_of(config(tmp_path))
    state = ServiceState(failures=2, backoff_until=160.0)
    doc = saved(svc, state, wall=1_000.0, mono=100.0, breaker=Breaker(3, 140.0, "HTTP 500"))
    back = restore(doc, ident(svc), svc, wall=1_020.0, mono=0.0)
    s = back.saved.state
    assert s.failures == 2 and s.backoff_until == pytest.approx(40.0)  # 60 s left when saved, 20 s spent down
    assert envelope(svc, s, 3, OPEN, 0.0).hi_by == "backoff"
    assert back.saved.breaker == Breaker(3, pytest.approx(20.0), "HTTP 500")


@pytest.mark.parametrize(
    ("change", "discarded", "kept"),
    [
        ({"cooldown_up": "60s"}, [], ["last scale-up", "stabilization"]),
        ({"max": 12}, ["stabilization recommendation(s): max_replicas changed (10 -> 12)"], ["last scale-up"]),
        ({"min": 2}, ["min_replicas changed (1 -> 2)"], ["last scale-up"]),
        ({"policy": "docktor"}, ["policy changed (rules -> docktor)"], ["last scale-up"]),
        ({"url": "nats://127.0.0.1:4333"}, ["rate baseline of source nats: source nats changed"], ["last scale-up", "stabilization"]),
        ({"python": "/usr/bin/env"}, ["cooldown clocks and back-off: the executor changed", "the executor changed"], []),
    ],
)
def test_each_piece_is_kept_while_what_gives_it_meaning_is(
    tmp_path: Path, change: dict[str, Any], discarded: list[str], kept: list[str]
) -> None:
    old = svc_of(config(tmp_path))
    state = ServiceState(last_up_at=90.0)
    state.recommendations.append((95.0, 4))
    doc = saved(old, state, wall=2_000.0, mono=100.0, sources={"nats": {"v": 1, "age_s": 0.0, "counters": {}}})
    new = svc_of(config(tmp_path, **change))
    back = restore(doc, ident(new), new, wall=2_005.0, mono=0.0)
    text = " | ".join(back.discarded)
    for d in discarded:
        assert d in text
    for k in kept:
        assert any(k in line for line in back.kept), (k, back.kept)
    if not discarded:
        assert back.discarded == []
    # the source's baseline is handed back unless that source changed
    assert ("nats" in back.saved.sources) is not any("source nats" in d for d in back.discarded)
    if "cooldown clocks" in text:
        assert back.saved.state.last_up_at is None and not back.same_executor


def test_a_stale_baseline_is_dropped_and_a_pause_is_kept(tmp_path: Path) -> None:
    from docktor.agent.runtime.persist import Pause

    svc = svc_of(config(tmp_path))
    doc = saved(svc, ServiceState(), wall=1_000.0, mono=0.0, sources={"nats": {"v": 1}}, pause=Pause(990.0, 1_000.0 + 1800, "incident"))
    back = restore(doc, ident(svc), svc, wall=1_000.0 + 600, mono=0.0)  # 10 minutes down
    assert "rate baseline of source nats: 600 s old (kept up to 60 s)" in back.discarded
    assert back.saved.sources == {}
    assert back.saved.pause is not None and back.saved.pause.reason == "incident"
    gone = restore(doc, ident(svc), svc, wall=1_000.0 + 1801, mono=0.0)  # the pause ended while down
    assert gone.saved.pause is None


def test_an_llm_change_discards_the_breaker(tmp_path: Path) -> None:
    svc = svc_of(config(tmp_path))
    llm = LLMConfig(provider="ollama", model="a")
    doc = json.loads(json.dumps(capture(SavedState(ident(svc, llm), ServiceState(), breaker=Breaker(2, 50.0, "x")),
                                        service="worker", window=60, wall=100.0, mono=10.0)))
    same = restore(doc, ident(svc, llm), svc, wall=101.0, mono=0.0)
    assert same.saved.breaker is not None and same.saved.breaker.failures == 2
    other = restore(doc, ident(svc, LLMConfig(provider="ollama", model="b")), svc, wall=101.0, mono=0.0)
    assert other.saved.breaker is None and "LLM circuit breaker: the llm endpoint or model changed" in other.discarded


def test_an_endpoint_compose_injects_is_part_of_the_breakers_identity() -> None:
    # from: compose writes no endpoint: the one Compose's models: injects is what the breaker met
    llm = LLMConfig.model_validate({"from": "compose"})
    first = llm_identity(llm, {"LLM_URL": "http://model-runner:12434/engines/v1", "LLM_MODEL": "ai/gemma3"})
    moved = llm_identity(llm, {"LLM_URL": "http://other-runner:12434/engines/v1", "LLM_MODEL": "ai/gemma3"})
    assert first is not None and moved is not None and first != moved
    assert first == llm_identity(llm, {"LLM_URL": "http://model-runner:12434/engines/v1", "LLM_MODEL": "ai/gemma3"})
    # the state file keeps a digest: an endpoint's credentials are not written in it
    with_password = llm_identity(LLMConfig(provider="openai-compatible", base_url="http://u:s3cret@llm:8080/v1", model="m"), {})
    assert with_password is not None and "s3cret" not in with_password and "llm:8080" not in with_password


# --------------------------------------------------------------------------- the write-ahead log read back


def test_an_intent_without_its_outcome_counts_as_done(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    lines = [
        {"ts": "2026-01-01T00:00:00.000Z", "service": "worker", "id": "a", "phase": "intent", "decision": "scale_up"},
        {"ts": "2026-01-01T00:00:01.000Z", "service": "worker", "id": "a", "phase": "outcome", "outcome": {"status": "ok"}},
        {"ts": "2026-01-01T00:00:10.000Z", "service": "worker", "id": "b", "phase": "intent", "decision": "scale_down"},
        {"ts": "2026-01-01T00:00:20.000Z", "service": "web", "id": "c", "phase": "intent", "decision": "scale_up"},
        {"ts": "2026-01-01T00:00:21.000Z", "service": "web", "id": "c", "phase": "outcome",
         "outcome": {"status": "error", "retry_at": "2026-01-01T00:01:21.000Z"}},
        {"ts": "2026-01-01T00:00:22.000Z", "service": "worker", "decision": "hold"},
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn line')
    events = read_log_tail(log).events
    worker = fold(events["worker"], None)
    assert worker.ids == ["a", "b"]
    assert worker.last_up_at is not None and worker.last_down_at == worker.last_up_at + 10  # b: no outcome, counted
    web = fold(events["web"], None)
    assert web.last_up_at is None and web.failures == 1  # the failed one did not scale: it backs off
    assert web.backoff_until is not None and web.backoff_until - worker.last_up_at == 81.0
    assert fold(events["worker"], worker.last_up_at + 5).ids == ["b"]  # only what the state file does not have


# --------------------------------------------------------------------------- the file on a full disk


def test_the_state_file_is_replaced_whole_or_not_at_all(disk: SmallDisk) -> None:
    store = StateStore(disk.path)
    store.save("worker", {"n": 1})
    disk.fill()
    with pytest.raises(OSError):
        store.save("worker", {"n": 2, "pad": "x" * 10_000})
    assert store.load("worker") == {"n": 1}  # the previous state, whole
    assert [p.name for p in store.dir.iterdir()] == ["worker.json"]  # no temporary file left behind
    disk.free()
    store.save("worker", {"n": 3})
    assert store.load("worker") == {"n": 3}


async def test_a_full_disk_never_stops_a_tick_and_a_garbage_file_starts_afresh(
    disk: SmallDisk, nats_server: NatsServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every tick writes the file here (not only every STATE_EVERY_S): the full disk is met at once
    monkeypatch.setattr(service_loop, "STATE_EVERY_S", 0.0)
    await make_stream(nats_server.url)
    await publish(nats_server.url, "jobs.x", 700)
    state_dir = disk.path
    (state_dir / "state").mkdir()
    (state_dir / "state" / "worker.json").write_text("{not json")
    # min 0: the replicas of the local executor stop with the daemon, and a restart must not scale up
    # again from 0 within cooldown_up (min_replicas 1 would correct 0 -> 1 whatever the cooldown)
    text = SERVICE.format(python=sys.executable, min=0, max=4, policy="rules", cooldown_up="120s", url=nats_server.url)
    cfg = parse_config(f"state_dir: {state_dir}\n" + text, state_dir / "docktor.yaml", {})
    caplog.set_level(logging.INFO, logger="docktor")
    daemon = Supervisor(cfg, state="write")
    await daemon.open()
    try:
        assert "state file" in caplog.text and "unusable" in caplog.text
        runner = daemon.loops["worker"]
        first = await runner.tick()
        assert first.decision == "scale_up" and first.executed
        assert json.loads((state_dir / "state" / "worker.json").read_text())["last_up_at"] is not None

        disk.fill()
        caplog.clear()
        second = await runner.tick()  # the log cannot take it either: decided in memory, not acted
        assert second.target_replicas == first.target_replicas
        assert runner.save_error is not None and "state file" in caplog.text and "not writable" in caplog.text
        assert daemon.status()["services"]["worker"]["state_file_error"] == runner.save_error
        disk.free()
        await runner.tick()
        assert runner.save_error is None and "state file writable again" in caplog.text
    finally:
        await daemon.close()

    # and a new daemon finds the clock the first one saved
    again = Supervisor(cfg, state="write")
    await again.open()
    try:
        rec = await again.loops["worker"].tick()
        assert rec.decision == "hold" and rec.envelope is not None and rec.envelope["hi_by"] == "cooldown_up"
    finally:
        await again.close()
    await asyncio.sleep(0)


async def test_the_llm_circuit_breaker_survives_a_restart(tmp_path: Path, nats_server: NatsServer) -> None:
    """A scripted OpenAI-protocol server (a stand-in: it answers HTTP 500 on demand) fails the first
    call; the breaker opens; a new daemon on the same state folder does not ask it again until the
    back-off has passed."""
    from tests.support.scripted_openai_server import ScriptedOpenAIServer, error

    await make_stream(nats_server.url)
    await publish(nats_server.url, "jobs.x", 700)
    async with ScriptedOpenAIServer([error(500, "boom")]) as llm:
        text = SERVICE.format(python=sys.executable, min=1, max=4, policy="target", cooldown_up="0s", url=nats_server.url)
        # 700 queued at 350 per replica: 2, with room for the model's answer (2..4), so it is asked
        text = text.replace("    policy: target\n", "    policy: target\n    target_per_replica: 350\n")
        llm_block = json.dumps({"provider": "openai-compatible", "base_url": llm.base_url, "model": "scripted-model",
                                "timeout": "5s", "heartbeat": "600s"})
        cfg = parse_config(f"state_dir: {tmp_path}\nllm: {llm_block}\n" + text.replace("check_interval: 1s", "check_interval: 30s"),
                           tmp_path / "docktor.yaml", {})
        first = Supervisor(cfg, state="write")
        await first.open()
        try:
            runner = first.loops["worker"]
            await runner.tick()  # asks beside the loop
            deadline = asyncio.get_running_loop().time() + 60
            while first.beside.in_flight("worker"):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            landed = await runner.tick()
            assert landed.source == "fallback" and landed.llm is not None and landed.llm["breaker"]["failures"] == 1
        finally:
            await first.close()
        sent = len(llm.requests)
        assert sent >= 1

        second = Supervisor(cfg, state="write")
        await second.open()
        try:
            failures, open_until, last_error = second.advisor.breaker_state("worker")
            assert failures == 1 and open_until is not None and last_error.startswith("HTTP 500")
            rec = await second.loops["worker"].tick()
            assert rec.llm is not None and rec.llm["asked"] is False
            assert rec.llm["why"].startswith("circuit breaker open after 1 failed call (last: HTTP 500")
            await asyncio.sleep(0.2)
            assert len(llm.requests) == sent  # the restarted daemon did not call the failing endpoint
        finally:
            await second.close()


# --------------------------------------------------------------------------- how often the file is written


async def test_the_file_is_written_when_a_clock_moves_and_every_few_seconds_otherwise(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A tick that changes what a restart needs exactly (here: a scale-up's clock) is saved at once;
    ticks that only add to the stabilization window share a write every STATE_EVERY_S; stopping
    writes the last of them."""
    await make_stream(nats_server.url)
    await publish(nats_server.url, "jobs.x", 700)
    cfg = parse_config(f"state_dir: {tmp_path}\n" + SERVICE.format(python=sys.executable, min=0, max=4, policy="rules",
                                                                   cooldown_up="120s", url=nats_server.url)
                       .replace("timeout: 1s", "timeout: 10s"),  # a slow read on a loaded machine is not a failed one
                       tmp_path / "docktor.yaml", {})
    clock = FakeClock(100.0)  # wall = 1.9e9 + monotonic
    daemon = Supervisor(cfg, state="write", wall=clock.wall, mono=clock)
    file = tmp_path / "state" / "worker.json"

    def saved_at() -> float:
        return float(json.loads(file.read_text())["saved_at"])

    await daemon.open()
    try:
        runner = daemon.loops["worker"]
        first = await runner.tick()
        assert first.decision == "scale_up" and first.executed
        assert saved_at() == clock.wall()  # the scale-up's clock, at once
        written = [saved_at()]
        for _ in range(12):  # held by cooldown_up: nothing a restart needs exactly changes
            clock.advance(1.0)
            rec = await runner.tick()
            assert rec.decision == "hold"
            if saved_at() != written[-1]:
                written.append(saved_at())
        # 12 ticks, one a second: written 5 and 10 s after the scale-up, not at every tick
        assert [w - written[0] for w in written] == [0.0, service_loop.STATE_EVERY_S, 2 * service_loop.STATE_EVERY_S]
        assert saved_at() != clock.wall()
    finally:
        await daemon.close()
    doc = json.loads(file.read_text())
    assert doc["saved_at"] == clock.wall() and len(doc["recommendations"]) == 13  # close() wrote the last ticks


def test_a_restart_takes_the_window_newer_than_the_file_from_the_decision_log(tmp_path: Path) -> None:
    """The daemon died 4 s after its last write: its last four decisions, in the log, recommended
    more than anything in the file; the restarted daemon's window holds them."""
    cfg = parse_config(f"state_dir: {tmp_path}\n" + SERVICE.format(python=sys.executable, min=1, max=10, policy="rules",
                                                                   cooldown_up="120s", url="nats://127.0.0.1:1"),
                       tmp_path / "docktor.yaml", {})
    svc = svc_of(cfg)
    state = ServiceState()
    for t, n in [(10.0, 3), (11.0, 3)]:
        state.recommendations.append((t, n))
    wall0 = 1_900_000_000.0
    StateStore(tmp_path).save("worker", saved(svc, state, wall=wall0 + 11.0, mono=11.0))
    lines = [{"ts": rfc3339(wall0 + t), "service": "worker", "decision": "hold", "recommendation": n}
             for t, n in [(10.0, 3), (11.0, 3), (12.0, 7), (13.0, 8), (14.0, 8), (15.0, 6)]]
    lines.append({"ts": rfc3339(wall0 + 14.5), "service": "other", "decision": "hold", "recommendation": 9})
    (tmp_path / "decisions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    async def restart() -> Supervisor:
        daemon = Supervisor(cfg, state="write", wall=lambda: wall0 + 20.0, mono=lambda: 500.0)  # back 5 s after the last
        await daemon.open()
        await daemon.close()  # it never ticked: the file stays as the dead daemon left it
        return daemon

    daemon = asyncio.run(restart())
    runner = daemon.loops["worker"]
    assert [n for _, n in runner.state.recommendations] == [3, 3, 7, 8, 8, 6]
    assert runner.state.recommendations[-1][0] == pytest.approx(495.0)  # 5 s before the restart, in its clock
    assert runner.restored is not None
    assert "4 newer stabilization recommendation(s) from the decision log (highest 8)" in runner.restored.kept
    env = envelope(svc, runner.state, 8, OPEN, 500.0, proposal=2)
    assert (env.lo, env.lo_by) == (8, "stabilization")
    assert json.loads(StateStore(tmp_path).path("worker").read_text())["saved_at"] == wall0 + 11.0

    # other bounds: the window means nothing any more, from the file or from the log
    cfg = parse_config(f"state_dir: {tmp_path}\n" + SERVICE.format(python=sys.executable, min=1, max=12, policy="rules",
                                                                   cooldown_up="120s", url="nats://127.0.0.1:1"),
                       tmp_path / "docktor.yaml", {})
    daemon = asyncio.run(restart())
    assert not daemon.loops["worker"].state.recommendations
