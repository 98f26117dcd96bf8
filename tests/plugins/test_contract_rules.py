"""The contract suite catches what it claims to: each rule, run on a fake broken in that one way,
reports a violation that says what went wrong (and the same rule passes on the unbroken fake,
in tests/plugins/test_fakes.py)."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from docktor.tools.sdk import LastScale, Metrics, ReplicaStatus, ScaleOutcome, SourceError
from docktor.tools.testing import EXECUTOR_CHECKS, SOURCE_CHECKS, FakeExecutor, FakeSource, SilentServer, Violation
from docktor.tools.testing.cases import Run
from docktor.tools.testing.contract import run_in_own_loop
from tests.support import fake_peers
from tests.support.fake_peers import TOKEN, TOKEN_ENV


@pytest.fixture
def verdict(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Any:
    """``verdict(plugin, check)``: run one contract check on ``plugin`` against the fakes' peers."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    def run(plugin: Any, check: str) -> None:
        if issubclass(plugin, FakeSource):
            peer, checks = fake_peers.fake_queue_peer(), SOURCE_CHECKS
        else:
            peer, checks = fake_peers.fake_fleet_peer(tmp_path), EXECUTOR_CHECKS
        run_in_own_loop(checks[check](Run(plugin, peer, tmp_path, monkeypatch.setenv, lambda: caplog.text)), 120)

    return run


# --------------------------------------------------------------------------- sources broken one way each


class ZerosWhenDown(FakeSource):
    async def read(self) -> Metrics:
        try:
            return await super().read()
        except SourceError:
            return {"queue.backlog": 0.0}  # "an idle queue": exactly what must never happen


class ValueErrorOnGarbage(FakeSource):
    async def read(self) -> Metrics:
        try:
            return await super().read()
        except SourceError as e:
            if "garbage" in str(e):
                raise ValueError("could not parse the answer") from None
            raise


class BlocksTheLoop(FakeSource):
    async def read(self) -> Metrics:
        if self.script == "contract-silent":
            time.sleep(self.settings.timeout)  # a blocking call inside an async read: the old docs' example
            raise SourceError("timed out")
        return await super().read()


class IgnoresItsTimeout(FakeSource):
    async def read(self) -> Metrics:
        if self.script == "contract-silent":
            await asyncio.sleep(3600)
        return await super().read()


class UndeclaredMetric(FakeSource):
    async def read(self) -> Metrics:
        return {**await super().read(), "queue.secret_sauce": 1.0}


class NegativeBacklog(FakeSource):
    async def read(self) -> Metrics:
        return {**await super().read(), "queue.pending": -3.0}


class RatesOfZeroAtFirst(FakeSource):
    async def read(self) -> Metrics:
        return {"queue.rate_in": 0.0, "queue.rate_out": 0.0, **await super().read()}


class SnapshotNotJson(FakeSource):
    def snapshot(self) -> dict[str, Any] | None:
        data = super().snapshot()
        return None if data is None else {**data, "seen": {1, 2}}


class AcceptsAnySnapshot(FakeSource):
    def restore(self, data: Any, elapsed: float) -> bool:
        return True


class ForgetsTheBaseline(FakeSource):
    def restore(self, data: Any, elapsed: float) -> bool:
        return data.get("v") == 1  # says yes, keeps nothing


class SecretInItsError(FakeSource):
    async def read(self) -> Metrics:
        try:
            return await super().read()
        except SourceError as e:
            raise SourceError(f"{e} (token {os.environ.get(TOKEN_ENV)})") from None


class LeavesAConnectionOpen(FakeSource):
    #: where it connects (a stand-in the test starts), and what it never closes
    port = 0
    leaked: list[socket.socket] = []

    async def read(self) -> Metrics:
        self.leaked.append(socket.create_connection(("127.0.0.1", self.port)))
        return await super().read()


def test_a_connection_left_open_is_caught(verdict: Any) -> None:
    with SilentServer() as server:
        LeavesAConnectionOpen.port = server.port
        try:
            with pytest.raises(Violation, match=rf"close\(\) left 1 connection\(s\) open: tcp 127.0.0.1:\d+ -> 127.0.0.1:{server.port}$"):
                verdict(LeavesAConnectionOpen, "close_releases")
        finally:
            for conn in LeavesAConnectionOpen.leaked:
                conn.close()


# --------------------------------------------------------------------------- executors broken one way each


class OkWithoutVerifying(FakeExecutor):
    async def scale(self, replicas: int) -> ScaleOutcome:
        outcome = await super().scale(max(0, replicas - 1))  # one short, and says ok for n
        return ScaleOutcome(True, "done", outcome.duration_ms, replicas, outcome.removed)


class RaisesForABackendFailure(FakeExecutor):
    async def scale(self, replicas: int) -> ScaleOutcome:
        outcome = await super().scale(replicas)
        if not outcome.ok:
            raise RuntimeError(outcome.message)
        return outcome


class ForgetsWhatItRemoved(FakeExecutor):
    async def scale(self, replicas: int) -> ScaleOutcome:
        outcome = await super().scale(replicas)
        return ScaleOutcome(outcome.ok, outcome.message, outcome.duration_ms, outcome.running)


class ZeroWhenDown(FakeExecutor):
    async def status(self) -> ReplicaStatus:
        try:
            return await super().status()
        except Exception:
            return ReplicaStatus(desired=0, running=0)


class NamesARandomTarget(FakeExecutor):
    def target(self) -> str:
        return f"fake:{uuid.uuid4().hex}"


class LastScaledInTheYear33658(FakeExecutor):
    async def last_scaled(self) -> LastScale | None:
        return LastScale(at=1e12, direction="up")


class KeepsReplicasItShouldStop(FakeExecutor):
    in_process = True  # says its replicas live in the daemon...

    async def close(self) -> None:
        self.closed = True  # ...yet leaves them running


class TellsTheSecret(FakeExecutor):
    async def status(self) -> ReplicaStatus:
        status = await super().status()
        secrets = [os.environ.get(name, "") for name in self.context.secret_env]
        return ReplicaStatus(status.desired, status.running, status.failed, detail=f"env: {secrets}")


class NanCpu(FakeExecutor):
    async def status(self) -> ReplicaStatus:
        status = await super().status()
        return ReplicaStatus(status.desired, status.running, metrics={"cpu.avg": math.nan})


@pytest.mark.parametrize(("plugin", "check", "says"), [
    (ZerosWhenDown, "absent_never_zero", r"read\(\) of an unreachable peer returned \{'queue.backlog': 0.0\}"),
    (RatesOfZeroAtFirst, "absent_never_zero", r"metrics that cannot be read were reported: .*queue.rate_in"),
    (ValueErrorOnGarbage, "garbage_is_a_source_error", r"raised ValueError: could not parse the answer \(not a SourceError"),
    (BlocksTheLoop, "timeout_honoured", r"blocked the event loop for \d"),
    (IgnoresItsTimeout, "timeout_honoured", r"read\(\) of a silent peer did not return within 6 s"),
    (UndeclaredMetric, "reads_known_figures", r"does not declare: queue.secret_sauce"),
    (NegativeBacklog, "reads_known_figures", r"outside their metric's domain: queue.pending: -3 is negative"),
    (SnapshotNotJson, "snapshot_round_trips", r"snapshot\(\) after a read is not JSON-serialisable"),
    (AcceptsAnySnapshot, "snapshot_round_trips", r"restore\(\) of data it never wrote returned True"),
    (ForgetsTheBaseline, "snapshot_round_trips", r"lacks queue.rate_in, queue.rate_out: the baseline did not survive"),
    (SecretInItsError, "no_secret_leaks", r"a secret \(a canary value of FAKE_CONTRACT_TOKEN\) reached"),
    (OkWithoutVerifying, "scale_verifies", r"after an ok scale\(2\), status\(\) reports desired=1, running=1"),
    (RaisesForABackendFailure, "failure_is_an_outcome", r"scale\(1\) raised RuntimeError: no such image \(a backend failure is a failed outcome"),
    (ForgetsWhatItRemoved, "scale_verifies", r"scale\(1\) from 2 reported 0 removed replicas, not 1"),
    (ZeroWhenDown, "unreachable_is_an_executor_error", r"status\(\) of an unreachable backend returned .* it must raise ExecutorError"),
    (NamesARandomTarget, "target_and_last_scaled", r"two executors with the same settings name different targets"),
    (LastScaledInTheYear33658, "target_and_last_scaled", r"last_scaled\(\) must be None or a LastScale of a past wall-clock time"),
    (KeepsReplicasItShouldStop, "close_releases", r"a new executor sees 1 running, not 0: an in-process executor's close\(\) stops its replicas"),
    (TellsTheSecret, "no_secret_leaks", r"a credential named in Context.secret_env reached"),
    (NanCpu, "status_reports", r"status\(\) #1 \(its metrics\) returned values outside their metric's domain: cpu.avg: nan"),
])
def test_a_plugin_broken_one_way_is_caught_by_that_rule(verdict: Any, plugin: Any, check: str, says: str) -> None:
    with pytest.raises(Violation, match=says):
        verdict(plugin, check)
