"""The decision loop against real peers: isolation between services, missing data, schedule."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from docktor.agent.config.load import parse_config
from docktor.agent.core.schedule import next_tick
from docktor.agent.runtime.service_loop import ServiceLoop
from docktor.agent.runtime.status import StatusFile
from docktor.agent.runtime.supervisor import Supervisor
from tests.support.jetstream import make_stream, publish
from tests.support.peers import NatsServer


class Blackhole:
    """A TCP listener that accepts connections and never answers: a hung NATS server, on demand."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def service_yaml(name: str, url: str, interval: float, stream: str = "JOBS", min_r: int = 1) -> str:
    return f"""
  - name: {name}
    executor: local
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: {min_r}
    max_replicas: 5
    check_interval: {interval}
    policy: rules
    cooldown_down: 0
    scale_down_stabilization: 0
    queue: {{kind: nats, url: "{url}", stream: {stream}, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when: [{{metric: queue.backlog, op: ">", value: 500}}]
      scale_down_when: [{{metric: queue.backlog, op: "<=", value: 100}}]
"""


async def run_for(daemon: Supervisor, seconds: float) -> None:
    stop = asyncio.Event()
    await daemon.open()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    await daemon.close()


async def test_a_hung_source_never_delays_another_service(tmp_path: Path, nats_server: NatsServer) -> None:
    await make_stream(nats_server.url)
    hole = Blackhole()
    try:
        cfg = parse_config(
            f"state_dir: {tmp_path}\nservices:"
            + service_yaml("healthy", nats_server.url, 0.25)
            + service_yaml("stuck", f"nats://127.0.0.1:{hole.port}", 0.25),
            tmp_path / "docktor.yaml",
        )
        daemon = Supervisor(cfg)
        await run_for(daemon, 3.0)
    finally:
        hole.close()
    healthy, stuck = daemon.loops["healthy"], daemon.loops["stuck"]
    # 3 s at 0.25 s: 12 slots. The stuck service's reads take up to its whole interval, yet the
    # healthy one keeps (almost) every slot.
    assert healthy.ticks >= 10
    assert all(not r.get("errors") for r in healthy.recent)
    assert stuck.recent and all(r["errors"] and r["errors"][0].startswith("source:") for r in stuck.recent)


async def test_missing_data_never_scales_in(tmp_path: Path, nats_server: NatsServer) -> None:
    """Replicas above min, then the queue disappears: every decision holds, none scales in."""
    await make_stream(nats_server.url)
    cfg = parse_config(f"state_dir: {tmp_path}\nservices:" + service_yaml("w", nats_server.url, 0.3, min_r=3),
                       tmp_path / "docktor.yaml")
    daemon = Supervisor(cfg)
    await daemon.open()
    runner = daemon.loops["w"]
    first = await runner.tick()
    assert (first.decision, first.target_replicas, first.executed) == ("scale_up", 3, True)
    # Now lower the floor so that an empty queue *would* scale in, and take the source away.
    runner.svc = runner.svc.model_copy(update={"min_replicas": 1})
    nats_server.stop()
    records = [await runner.tick() for _ in range(3)]
    await daemon.close()
    for rec in records:
        assert rec.decision == "hold", rec.reason
        assert rec.current_replicas == 3
        assert "queue.backlog" in rec.missing
        assert any(e.startswith("source:") for e in rec.errors)


async def test_ticks_follow_the_interval_without_drift(tmp_path: Path, nats_server: NatsServer) -> None:
    await make_stream(nats_server.url)
    cfg = parse_config(f"state_dir: {tmp_path}\nservices:" + service_yaml("w", nats_server.url, 0.2),
                       tmp_path / "docktor.yaml")
    stamps: list[float] = []
    daemon = Supervisor(cfg)
    daemon.on_record.append(lambda rec: stamps.append(asyncio.get_running_loop().time()))
    await run_for(daemon, 2.1)
    # Each tick is scheduled at start + k*interval; a slow tick (the first one starts a replica)
    # is followed at once by one more, and the rest stay on the grid rather than shifting.
    gaps = [b - a for a, b in zip(stamps[2:], stamps[3:])]
    assert gaps and sorted(gaps)[len(gaps) // 2] < 0.3
    offsets = [(s - stamps[2]) % 0.2 for s in stamps[3:]]
    assert all(min(o, 0.2 - o) < 0.1 for o in offsets)


def test_a_tick_that_overran_is_followed_at_once_then_the_grid() -> None:
    # interval 5 s, loop started at 100: tick 0 due at 100, tick 1 at 105, ...
    assert next_tick(100.0, 5.0, 0, 101.5) == (1, pytest.approx(3.5))  # on time: wait for the next slot
    assert next_tick(100.0, 5.0, 0, 106.0) == (1, pytest.approx(0.0))  # overran slot 1: run it now
    assert next_tick(100.0, 5.0, 1, 106.2) == (2, pytest.approx(3.8))  # ... and tick 2 is still due at 110
    # A scale command that took 13 s: slots 1 and 2 missed; one tick now, the next at 115.
    assert next_tick(100.0, 5.0, 0, 113.0) == (2, pytest.approx(0.0))
    assert next_tick(100.0, 5.0, 2, 113.1) == (3, pytest.approx(1.9))
    # Exactly at the slot counts as overrun by nothing: run it now.
    assert next_tick(100.0, 5.0, 0, 105.0) == (1, pytest.approx(0.0))


class SlowFirstTick(ServiceLoop):
    """A scripted stand-in for a slow scale command: the first tick takes 2.4 s."""

    stamps: list[float]

    async def tick(self, *, dry_run: bool = False) -> Any:
        self.stamps.append(asyncio.get_running_loop().time())
        if len(self.stamps) == 1:
            await asyncio.sleep(2.4)


async def test_the_loop_ticks_at_once_after_an_overrun(tmp_path: Path, nats_server: NatsServer) -> None:
    await make_stream(nats_server.url)
    cfg = parse_config(f"state_dir: {tmp_path}\nservices:" + service_yaml("w", nats_server.url, 1.0),
                       tmp_path / "docktor.yaml")
    daemon = Supervisor(cfg)
    await daemon.open()
    built = daemon.loops["w"]
    slow = daemon.loops["w"] = SlowFirstTick(built.svc, built.sources, built.executor, daemon)
    slow.stamps = []
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.sleep(4.6)
    stop.set()
    await task
    await daemon.close()
    t0, *later = slow.stamps
    # The slow tick ended at 2.4 s: one tick then (not at the 3 s slot) ...
    assert 2.4 <= later[0] - t0 < 2.9, slow.stamps
    # ... and the ticks after it on the 1 s grid: 3 s, 4 s (not 3.4 s, 4.4 s).
    assert len(later) >= 3, slow.stamps
    assert all(abs(s - t0 - due) < 0.2 for s, due in zip(later[1:3], (3.0, 4.0))), slow.stamps


class JumpingClock:
    """The monotonic clock plus what the test skipped ahead: the loop's schedule sees a tick that
    took ``jump`` seconds without the test waiting for them (a stand-in for a slow tick)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


class Stamped(ServiceLoop):
    """Records when (on the daemon's clock) each tick runs; reads nothing."""

    stamps: list[float]

    async def tick(self, *, dry_run: bool = False) -> Any:
        self.stamps.append(self.daemon.mono())


async def test_with_rates_at_30_s_checks_the_second_tick_is_the_warm_up_read(tmp_path: Path, nats_server: NatsServer) -> None:
    """The first tick "takes" 6 s (the clock skips them): past the warm-up slot (5 s), short of the
    grid's (30 s). The loop runs the warm-up slot at once rather than waiting 24 s for the grid."""
    await make_stream(nats_server.url)
    cfg = parse_config(f"state_dir: {tmp_path}\nservices:" + service_yaml("w", nats_server.url, 30.0),
                       tmp_path / "docktor.yaml")
    clock = JumpingClock()
    daemon = Supervisor(cfg, mono=clock)
    await daemon.open()
    built = daemon.loops["w"]
    loop = daemon.loops["w"] = Stamped(built.svc, built.sources, built.executor, daemon)
    loop.stamps = []
    assert loop.reads_rates  # the NATS source reports queue.rate_in
    second = asyncio.Event()

    def after(name: str, took: float) -> None:
        if len(loop.stamps) == 1:
            clock.skipped += 6.0
        else:
            second.set()

    daemon.on_tick.append(after)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await second.wait()  # without the warm-up this comes 24 s later, and the stamps below say so
    stop.set()
    await task
    await daemon.close()
    t0, t1 = loop.stamps[:2]
    assert 6.0 <= t1 - t0 < 30.0, loop.stamps  # the warm-up slot, run at once; not the grid's at 30 s


TWO_SOURCES = """
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    min_replicas: 1
    max_replicas: 5
    check_interval: 0.5
    policy: rules
    sources:
      - {{name: jobs, kind: nats, url: "{url}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
      - {{name: urgent, kind: nats, url: "{url}", stream: URGENT, consumer: WORKERS, timeout: 1s}}
    rules:
      scale_up_when:
        - {{metric: queue.backlog, op: ">", value: 500}}
        - {{metric: urgent.queue.backlog, op: ">", value: 20}}
      scale_down_when:
        - {{metric: queue.backlog, op: "<=", value: 100}}
        - {{metric: urgent.queue.backlog, op: "<=", value: 0}}
"""


async def test_a_service_with_two_sources_decides_on_both(tmp_path: Path, nats_server: NatsServer) -> None:
    """Two real JetStream streams: the first source is the queue, the second's metrics are prefixed."""
    await make_stream(nats_server.url)
    await make_stream(nats_server.url, name="URGENT")
    await publish(nats_server.url, "jobs.a", 30)
    await publish(nats_server.url, "urgent.a", 50)
    text = f"state_dir: {tmp_path / 'state'}\n" + TWO_SOURCES.format(python=sys.executable, url=nats_server.url)
    daemon = Supervisor(parse_config(text, tmp_path / "docktor.yaml", {}))
    await daemon.open()
    try:
        (first,) = await daemon.run_once()
        # only the second source's backlog fires: the decision was made on both sources
        assert first.observations["queue.backlog"] == 30 and first.observations["urgent.queue.backlog"] == 50
        assert first.matched_rules == ["urgent.queue.backlog 50 > 20"]
        assert (first.decision, first.current_replicas, first.target_replicas, first.executed) == ("scale_up", 0, 2, True)

        # the second stream's consumer is gone: its metrics are missing, the error names the source,
        # and missing data holds instead of scaling in although the first queue alone would allow it
        import nats

        nc = await nats.connect(nats_server.url)
        await nc.jetstream().delete_consumer("URGENT", "WORKERS")
        await nc.close()
        (second,) = await daemon.run_once()
        assert "urgent.queue.backlog" not in second.observations and second.observations["queue.backlog"] == 30
        assert any(e.startswith("source urgent: ") and "consumer 'WORKERS' not found" in e for e in second.errors), second.errors
        assert second.missing == ["urgent.queue.backlog"] and second.decision == "hold"
    finally:
        await daemon.close()


async def test_a_long_source_outage_applies_its_on_missing_fallback(tmp_path: Path, nats_server: NatsServer) -> None:
    """KEDA's fallback on a real outage: after two failed reads, at least 3 replicas."""
    await make_stream(nats_server.url)
    text = service_yaml("w", nats_server.url, 0.3).replace(
        "timeout: 1s}", "timeout: 1s, on_missing: {action: current-if-higher, replicas: 3, after: 2}}"
    ).replace("cooldown_down: 0", "cooldown_down: 0\n    cooldown_up: 0")
    daemon = Supervisor(parse_config(f"state_dir: {tmp_path}\nservices:" + text, tmp_path / "docktor.yaml"))
    await daemon.open()
    runner = daemon.loops["w"]
    try:
        assert (await runner.tick()).target_replicas == 1
        nats_server.stop()
        first = await runner.tick()
        assert first.decision == "hold" and first.fallbacks is None  # one failed read: the HPA rule only
        second = await runner.tick()
        assert (second.decision, second.target_replicas, second.executed) == ("scale_up", 3, True)
        assert second.fallbacks == [{"source": "nats", "action": "current-if-higher", "replicas": 3, "failed_reads": 2, "target": 3}]
        assert second.missing == ["queue.backlog"] and second.errors[0].startswith("source:")
    finally:
        await daemon.close()


class CountingWrites(StatusFile):
    """The status file, counting its writes (the file itself is real)."""

    writes = 0

    def write(self) -> None:
        self.writes += 1
        super().write()


async def test_a_burst_of_decisions_shares_status_file_writes(tmp_path: Path, nats_server: NatsServer) -> None:
    """Eight services deciding at once: the status file shows every last decision, written a
    couple of times rather than once per decision (each write serializes every service)."""
    from docktor.agent.runtime.status import STATUS_EVERY_S

    names = [f"s{i}" for i in range(8)]
    for name in names:
        await make_stream(nats_server.url, name=name.upper())
    text = "".join(service_yaml(n, nats_server.url, 1.0, stream=n.upper()) for n in names)
    status = tmp_path / "status.json"
    daemon = Supervisor(parse_config(f"state_dir: {tmp_path}\nservices:" + text, tmp_path / "docktor.yaml"))
    counted = daemon.status_file = CountingWrites(status, daemon.status)
    await daemon.open()
    try:
        for _ in range(2):
            before, began = counted.writes, time.monotonic()
            records = await daemon.run_once()
            took = time.monotonic() - began
            await asyncio.sleep(STATUS_EVERY_S + 0.2)  # the write that carries the last of them
            shown = json.loads(status.read_text())["services"]
            assert {n: shown[n]["last_decision"]["ts"] for n in names} == {r.service: r.ts for r in records}
            # 8 decisions: one write at once, then one per STATUS_EVERY_S while they come in (a
            # loaded machine spreads them out; each starts a replica)
            assert 1 <= counted.writes - before <= 2 + took / STATUS_EVERY_S, (counted.writes - before, took)

        # stopping writes the decisions still waiting for their write (none waits a loop's turn)
        records = await daemon.run_once()
    finally:
        await daemon.close()
    shown = json.loads(status.read_text())["services"]
    assert {n: shown[n]["last_decision"]["ts"] for n in names} == {r.service: r.ts for r in records}


async def test_a_reload_that_changes_only_what_advice_may_do_restarts_nothing(tmp_path: Path, nats_server: NatsServer) -> None:
    """The llm: allowance and asking rules change in place (the advisor, its breakers and every
    service go on); a new endpoint starts a new advisor and every service again."""
    await make_stream(nats_server.url)

    def config(**llm: Any) -> Any:
        block = {"provider": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "model": "m", **llm}
        text = f"state_dir: {tmp_path}\nllm: {json.dumps(block)}\nservices:" + service_yaml("w", nats_server.url, 1.0)
        return parse_config(text, tmp_path / "docktor.yaml")

    daemon = Supervisor(config())
    await daemon.open()
    try:
        advisor, runner = daemon.advisor, daemon.loops["w"]
        assert advisor is not None and advisor.allowance.replicas == 2
        report = await daemon.reload(config(max_extra_replicas=5, heartbeat=60))
        assert report["changed"] == {} and report["unchanged"] == ["w"]
        assert report["llm_retuned"] == ["heartbeat", "max_extra_replicas"]
        assert daemon.advisor is advisor and daemon.loops["w"] is runner
        assert (advisor.allowance.replicas, advisor.config.heartbeat) == (5, 60.0)

        report = await daemon.reload(config(max_extra_replicas=5, heartbeat=60, model="another"))
        assert report["changed"] == {"w": "llm"} and report["llm_retuned"] == []
        assert daemon.advisor is not advisor and daemon.loops["w"] is not runner
        assert daemon.advisor.allowance.replicas == 5
    finally:
        await daemon.close()
