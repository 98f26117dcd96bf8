"""What every policy returns (a :class:`Proposal`), and what the registry knows of a policy (:class:`PolicySpec`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.rules import Evaluation
from docktor.agent.core.state import ServiceState

if TYPE_CHECKING:
    from docktor.agent.core.carried import Sized


@dataclass(frozen=True)
class Proposal:
    target: int
    reason: str
    #: the count kept as it is, not sized (a tolerance, no measurement yet, messages already
    #: late): ``headroom`` is added only to a sized count, since a kept count already carries the
    #: headroom of the decision that set it, and adding it again would ratchet up every tick
    keeps: bool = False
    #: the docktor policy's throughput and correction (core/carried.py): what the effect check and
    #: the state file read; not part of what is proposed, so two proposals compare without it
    sized: Sized | None = field(default=None, compare=False)


ProposeFn = Callable[[ServiceConfig, Mapping[str, float], int, ServiceState, Evaluation, float], Proposal]


@dataclass(frozen=True)
class PolicySpec:
    propose: ProposeFn
    #: metrics the policy cannot decide without, beyond those the rules name
    required: Callable[[ServiceConfig], set[str]]
    #: True: the rules alone choose the direction (threshold autoscaler). False: the policy sizes,
    #: and the rules act as vetoes (no scale-in unless scale_down_when holds, none while an up rule fires).
    rules_drive: bool
