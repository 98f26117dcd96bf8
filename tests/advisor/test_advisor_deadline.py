"""One deadline for the whole LLM call: ``docktor decide --once`` against a hung LLM server waits
at most ``llm.timeout`` for it, probes, retries and all.

The command runs for real (a real nats-server with a backlog, the real CLI, the real ``openai``
client over HTTP). The LLM servers are stand-ins for faults a real llama.cpp cannot produce on
demand: one that accepts connections and never answers anything (:class:`SilentPeer`), and the
scripted server (``tests/support/scripted_openai_server.py``) whose chat requests hang, or fail
slowly with 503 so that the client retries.

Bounds: ``llm.timeout`` is 3 s. From the LLM server's first connection to the command's exit must
stay under 6 s (3 s of slack for writing the records and exiting on a loaded 2-core machine),
measured by the servers themselves so that the command's start-up (imports) does not count, and
the decision record's ``llm.latency_ms`` under 4 s.
Three attempts of the slow server alone would take 3.6 s, a probe of the silent one 6 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.jetstream import make_stream
from tests.support.peers import NatsServer
from tests.support.scripted_openai_server import HANG, ScriptedOpenAIServer, Slow, error

TIMEOUT = 3.0
#: what the command may add to ``llm.timeout`` from the LLM server's first connection to its exit
WALL_SLACK = 3.0
#: what the call may overrun its deadline by, as the record measures it
LATENCY_SLACK = 1.0

#: 700 queued, nothing running: the target policy wants 7 and the step limit lets it go there at
#: once, so the advisor has room above it (7..11) and is asked
CONFIG = """
state_dir: {state}
{llm}
services:
  - name: worker
    executor: local
    command: ["{python}", "-c", "import time; time.sleep(600)"]
    min_replicas: 1
    max_replicas: 20
    policy: target
    target_per_replica: 100
    scale_up_by: 20
    queue: {{kind: nats, url: "{nats}", stream: JOBS, consumer: WORKERS, timeout: 1s}}
"""


class SilentPeer:
    """A stand-in for a hung LLM server: accepts every connection, reads, never answers (not even
    the capability probes that start a call)."""

    def __init__(self) -> None:
        self.connections = 0
        self.first_contact: float | None = None  # time.monotonic() of the first connection
        self._server: asyncio.base_events.Server | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self.base_url = ""

    async def __aenter__(self) -> SilentPeer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.first_contact = self.first_contact or time.monotonic()
        task = asyncio.current_task()
        assert task is not None
        self._readers.add(task)
        try:
            while await reader.read(65536):
                pass  # read what the client sends, answer nothing
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self._readers.discard(task)
            writer.close()


async def decide_once(config: Path) -> tuple[float, list[dict[str, Any]]]:
    """``docktor decide --config CONFIG --once --dry-run --json --window 0``: when it exited (monotonic) and its records."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "docktor.agent.cli", "decide", "--config", str(config), "--once", "--dry-run", "--json",
        "--window", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    ended = time.monotonic()
    assert proc.returncode == 0, err.decode()
    return ended, [json.loads(line) for line in out.decode().splitlines()]


def write_config(folder: Path, nats: NatsServer, base_url: str | None) -> Path:
    folder.mkdir()
    llm = "" if base_url is None else (
        f'llm: {{provider: openai-compatible, base_url: "{base_url}", model: scripted-model, timeout: {TIMEOUT}}}'
    )
    config = folder / "docktor.yaml"
    config.write_text(CONFIG.format(state=folder / "state", llm=llm, python=sys.executable, nats=nats.url))
    return config


@pytest.mark.parametrize("fault", ["nothing answers", "the chat request hangs", "slow 503s, retried"])
async def test_decide_once_waits_for_a_hung_llm_at_most_llm_timeout(nats_server: NatsServer, tmp_path: Path, fault: str) -> None:
    await make_stream(nats_server.url, 700)
    _, (plain,) = await decide_once(write_config(tmp_path / "plain", nats_server, None))
    assert plain["decision"] == "scale_up" and plain.get("llm") is None

    peer: Any = {
        "nothing answers": SilentPeer(),
        "the chat request hangs": ScriptedOpenAIServer([HANG]),
        "slow 503s, retried": ScriptedOpenAIServer([Slow(1.2, error(503, "loading model"))]),
    }[fault]
    async with peer:
        ended, (first, landed) = await decide_once(write_config(tmp_path / "llm", nats_server, peer.base_url))

    # the deterministic decision at once, then the call's fallback when it ended
    assert first["source"] == "policy" and first["llm"]["asked"] and "in_flight" in first["llm"]
    assert landed["source"] == "fallback", landed["llm"]
    assert landed["target_replicas"] == first["target_replicas"] == 7
    if fault == "slow 503s, retried":
        assert len(peer.requests) >= 2  # retried, inside the same deadline
        # the same words whether the deadline fell during the third attempt or before it
        assert landed["llm"]["error"] == "timeout (retrying HTTP 503: Error code: 503 - loading model)", landed["llm"]
    else:
        assert landed["llm"]["error"] == "timeout", landed["llm"]
    if fault == "nothing answers":
        assert peer.connections >= 1

    assert landed["llm"]["latency_ms"] <= (TIMEOUT + LATENCY_SLACK) * 1000, landed["llm"]
    assert peer.first_contact is not None
    assert ended - peer.first_contact < TIMEOUT + WALL_SLACK, ended - peer.first_contact
