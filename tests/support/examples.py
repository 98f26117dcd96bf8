"""Helpers for the examples' end-to-end tests: the real daemon on an example's own docktor.yaml,
its decision log, and watching a stack under bursts (waiting is tests/support/waiting.py).

The burst helpers are shared with ``benchmarks/compose_stack.py``: the test asserts on what the
benchmark reports, from the same samples, computed the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import yaml

from docktor.agent.runtime.log_reader import read_records

DOCKTOR = Path(sys.executable).with_name("docktor")


def example_config(example: Path, tmp: Path, *, name: str = "docktor.yaml", **overrides: Any) -> Path:
    """The example's ``name`` (its docktor.yaml), unchanged but for where its state and compose file live."""
    doc = yaml.safe_load((example / name).read_text())
    doc["state_dir"] = str(tmp / "state")
    doc["compose_file"] = str(example / "docker-compose.yaml")
    doc.update(overrides)
    path = tmp / "docktor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextmanager
def daemon(config: Path, env: dict[str, str], *args: str) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """``docktor daemon start --foreground``; yields a reader of its decision log; stops it on exit."""
    tmp = config.parent
    out = tmp / "daemon.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [str(DOCKTOR), "daemon", "start", "--config", str(config), "--foreground", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )
        decisions = tmp / "state" / "decisions.jsonl"

        def read() -> list[dict[str, Any]]:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited with {proc.returncode}:\n{out.read_text()}")
            if not decisions.exists():
                return []
            return list(read_records(decisions))  # one per decision: intent and outcome lines merged

        try:
            yield read
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def executed(records: list[dict[str, Any]], decision: str) -> list[dict[str, Any]]:
    return [r for r in records if r["decision"] == decision and r["executed"]]


def outcomes_logged(records: list[dict[str, Any]]) -> bool:
    """Every executed decision has its outcome line (an intent alone reads as status ``unknown``)."""
    return all((r.get("outcome") or {}).get("status") != "unknown" for r in records if r.get("executed"))


def errors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if (r.get("outcome") or {}).get("status") == "error"]


# --------------------------------------------------------------------------- a stack under bursts


@dataclass
class Sample:
    """What the stack looked like at ``t`` (time.time()), measured apart from Docktor."""

    t: float
    last_seq: int  # the stream's last sequence: arrivals so far
    backlog: int  # the consumer's pending + ack pending
    running: int  # the scaled service's running containers, from Docker


async def sample_stack(
    url: str,
    project: str,
    samples: list[Sample],
    stop: asyncio.Event | threading.Event,
    *,
    service: str = "consumer",
    stream: str = "EVENTS",
    consumer: str = "WEB_WORKERS",
    every: float = 0.25,
) -> int:
    """Append a :class:`Sample` every ``every`` seconds until ``stop``; returns the samples missed.

    JetStream's own counts and Docker's own container list: what happened, not Docktor's word. A
    missed sample (a slow engine on a shared machine) is a gap in the series, never a zero.
    """
    import docker
    import nats

    from tests.support.peers import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL

    client = docker.from_env(timeout=10)
    filters = {"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}", f"{ONEOFF_LABEL}=False"]}
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1)
    js = nc.jetstream()
    missed = 0
    try:
        while not stop.is_set():
            t = time.time()
            try:
                info = await asyncio.wait_for(js.stream_info(stream), 2)
                cons = await js.consumer_info(stream, consumer, timeout=2)
                running = await asyncio.to_thread(lambda: len(client.containers.list(filters=filters, sparse=True)))
            except Exception as e:
                missed += 1
                if missed == 1:
                    print(f"{project}: a sample failed: {type(e).__name__}: {e}", file=sys.stderr)
            else:
                backlog = int(cons.num_pending or 0) + int(cons.num_ack_pending or 0)
                samples.append(Sample(t, int(info.state.last_seq), backlog, running))
            await asyncio.sleep(max(0.0, every - (time.time() - t)))
    finally:
        await nc.close()
        client.close()
    return missed


@contextmanager
def sampling(url: str, project: str, **kwargs: Any) -> Iterator[list[Sample]]:
    """:func:`sample_stack` in a thread of its own, for synchronous tests; yields the growing list."""
    samples: list[Sample] = []
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(sample_stack(url, project, samples, stop, **kwargs))
        except BaseException as e:  # surfaced to the test below, not lost in the thread
            failed.append(e)

    thread = threading.Thread(target=run, name=f"sample-{project}", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(30)
    if failed:
        raise failed[0]


def arrival_rates(samples: list[Sample]) -> list[tuple[float, float]]:
    """(time, messages/s over the preceding ~1 s) from the stream's last sequence."""
    out = []
    j = 0
    for i, s in enumerate(samples):
        while j < i and s.t - samples[j].t > 1.0:
            j += 1
        if j < i and s.t > samples[j].t:
            out.append((s.t, (s.last_seq - samples[j].last_seq) / (s.t - samples[j].t)))
    return out


def burst_starts(samples: list[Sample], threshold: float) -> list[float]:
    """Bursts: the arrival rate above ``threshold`` for at least 3 s, after at least 5 s below it."""
    starts: list[float] = []
    below_since: float | None = None
    above_since: float | None = None
    counted = False
    for t, r in arrival_rates(samples):
        if r < threshold:
            if below_since is None:
                below_since = t
            above_since, counted = None, False
            continue
        if above_since is None:
            above_since = t if below_since is not None and t - below_since >= 5 else None
        below_since = None
        if above_since is not None and not counted and t - above_since >= 3:
            starts.append(above_since - 1.0)  # the 1 s window that first crossed began a second earlier
            counted = True
    return starts


def settled_at(samples: list[Sample], start: float, end: float, level: int) -> float | None:
    """When, in the cycle [start, end), the running count came down to ``level`` or fewer for the
    rest of it: ``start`` if it never rose above ``level``, None if it had not come down by ``end``."""
    window = [x for x in samples if start <= x.t < end]
    if not window:
        return None
    if max(x.running for x in window) <= level:
        return start
    last_above = max(i for i, x in enumerate(window) if x.running > level)
    return window[last_above + 1].t if last_above + 1 < len(window) else None


# ----------------------------------------------------------------------- examples/nats-multi's queue


async def _nats_multi_backlog(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        info = await nc.jetstream().consumer_info("EVENTS", "WEB_WORKERS", timeout=5)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    finally:
        await nc.close()


def nats_multi_backlog(url: str) -> int:
    """JetStream's own count of unfinished work (pending + in flight) for nats-multi's WEB_WORKERS."""
    return asyncio.run(_nats_multi_backlog(url))


async def publish_events(url: str, n: int) -> None:
    """``n`` messages on nats-multi's ``events.web``, 250 in flight at a time."""
    nc = await nats.connect(url, connect_timeout=2)
    try:
        js = nc.jetstream()
        for start in range(0, n, 250):
            await asyncio.gather(*(js.publish("events.web", b'{"test": true}') for _ in range(start, min(n, start + 250))))
    finally:
        await nc.close()


class ComposeStack:
    """What every example's test asks of its Compose project (a mixin for its ``Stack``, which
    names the ``project`` and the ports of its peers)."""

    project: str

    def workers(self) -> int:
        """The worker service's running containers."""
        from tests.support.peers import containers

        return len(containers(self.project, "worker", all=False))

    def web(self) -> dict[str, str]:
        """The web service's containers and when each started (a restart shows as a new time)."""
        from tests.support.peers import containers

        return {c.id: c.attrs["State"]["StartedAt"] for c in containers(self.project, "web")}


# --------------------------------------------------------------------------- how replicas stopped


def removed_replicas(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every replica the executed scale-ins removed, as their outcomes recorded it: replica, why, stopped."""
    return [x for r in executed(records, "scale_down") for x in (r.get("outcome") or {}).get("removed", [])]


def honoured_sigterm(stopped: str) -> bool:
    """The local executor's ``stopped`` text for a replica that exited cleanly on SIGTERM, within
    its grace period ("exited with code 0 0.3 s after SIGTERM"), not "ignored SIGTERM ...: SIGKILL"."""
    return stopped.startswith("exited with code 0 ") and stopped.endswith(" after SIGTERM")


def replica_stop_lines(state_dir: Path, service: str) -> dict[str, list[str]]:
    """The local executor's own lines about stopping, from each replica's log (``logs/SERVICE.N.log``):
    what ``daemon stop`` did to the replicas it stopped, which no decision records."""
    out: dict[str, list[str]] = {}
    for log in sorted((state_dir / "logs").glob(f"{service}.*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if line.startswith("[docktor ") and ("SIGTERM" in line or "SIGKILL" in line or ": stopped (" in line)]
        out[log.name] = lines
    return out


def run_ok(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cmd`` in ``cwd`` as a user types it: it must exit 0 (its output shown when it does not)."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stdout}\n{done.stderr}"
    return done


def logged_decisions(folder: Path) -> list[dict[str, Any]]:
    """The decisions a daemon run in ``folder`` logged (``.docktor/decisions.jsonl``), one record
    per decision (an action's intent and outcome lines merged)."""
    return list(read_records(folder / ".docktor" / "decisions.jsonl"))
