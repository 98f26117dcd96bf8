"""A slow or silent source, on the real daemon with in-memory fakes (issue 21): the daemon waits
for a reading at least as long as the plugin's own ``timeout`` (plus a second), so a record says
what the plugin knows (the server, the cause), not a bare "timed out"; a plugin that ignores its
own timeout is cut, and the record says how long was waited and for what."""

from __future__ import annotations

import time
from pathlib import Path

from docktor.agent.config.load import load_config
from docktor.agent.runtime.supervisor import Supervisor
from docktor.tools import registry
from docktor.tools.testing import FakeExecutor, FakeFleet, FakeQueue, FakeSource

CONFIG = """
state_dir: state
services:
  - name: {name}
    executor: fake
    queue: {{kind: fake, timeout: 1.5s}}
    check_interval: 0.5s
    policy: target
    target_per_replica: 10
    min_replicas: 1
    max_replicas: 8
"""


async def test_a_silent_peer_is_named_by_the_plugin_and_a_hung_plugin_by_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "docktor.yaml").write_text(CONFIG.format(name="slowpoke"))
    queue = FakeQueue("slowpoke", {"queue.backlog": 20.0})
    FakeFleet("slowpoke", replicas=2)
    with registry.installed(FakeSource, FakeExecutor):
        daemon = Supervisor(load_config(tmp_path / "docktor.yaml"))
        await daemon.open()
        try:
            loop = daemon.loops["slowpoke"]
            assert loop.read_bounds == {"fake": 2.5}  # check_interval 0.5 s, the source's own 1.5 s + 1
            queue.stall()
            began = time.monotonic()
            silent = await loop.tick()
            waited = time.monotonic() - began
            queue.hang(30)
            hung = await loop.tick()
        finally:
            await daemon.close()
    # the plugin gave up at its own timeout and said why; before, the daemon cut it at 1 s: "timed out"
    assert 1.5 <= waited < 2.5
    assert silent.errors == ["source: fake queue 'slowpoke' timed out after 1.5s"], silent.errors
    assert hung.errors == ["source: no reading within 2.5 s (fake queue)"], hung.errors
    for rec in (silent, hung):  # missing data never scales in
        assert (rec.decision, rec.current_replicas) == ("hold", 2)
