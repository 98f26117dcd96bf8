"""Peers for the contract suite on the test kit's fakes: scripted queues and fleets, fresh per call.

Shared by the fakes' own tests (tests/plugins/test_fakes.py) and the tests of the contract's rules
(tests/plugins/test_contract_rules.py), which run the same checks on deliberately broken fakes.
"""

from __future__ import annotations

from pathlib import Path

from docktor.tools.sdk import Context
from docktor.tools.testing import ExecutorPeer, FakeFleet, FakeQueue, SourcePeer

#: the variable the healthy fake queue's token is read from
TOKEN_ENV = "FAKE_CONTRACT_TOKEN"
TOKEN = "the-right-token"


def fake_queue_peer() -> SourcePeer:
    """Queues that answer 12 waiting (with counters), garbage, nothing; the healthy one wants
    :data:`TOKEN` from :data:`TOKEN_ENV` (set it)."""
    FakeQueue("contract-healthy", {"queue.backlog": 12, "queue.pending": 9}, token=TOKEN).count(arrived=40, completed=28)
    FakeQueue("contract-garbage").garble(times=None)
    FakeQueue("contract-silent").stall(times=None)
    FakeQueue("contract-nowhere").forget()
    common = {"kind": "fake", "token_env": TOKEN_ENV, "timeout": 1}
    return SourcePeer(
        healthy={**common, "script": "contract-healthy"},
        expect={"queue.backlog": 12, "queue.pending": 9},
        unreachable={**common, "script": "contract-nowhere"},
        garbage=[{**common, "script": "contract-garbage"}],
        silent={**common, "script": "contract-silent"},
        missing={"queue.rate_in", "queue.rate_out"},
    )


def fake_fleet_peer(folder: Path) -> ExecutorPeer:
    """A fleet that scales (with CPU figures and a target), one that refuses every scale, one that is down."""
    FakeFleet("contract-fleet", metrics={"cpu.avg": 12.5}, target="fake:contract-fleet")
    FakeFleet("contract-broken").refuse("no such image", times=None)
    FakeFleet("contract-down").down()
    return ExecutorPeer(
        settings={"kind": "fake", "script": "contract-fleet"},
        context=Context("contract", folder, folder),
        failing={"kind": "fake", "script": "contract-broken"},
        unreachable={"kind": "fake", "script": "contract-down"},
    )
