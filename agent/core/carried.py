"""What a decision used of the policy's memory, carried from the tick to the state file and the effect check.

A tick's decision reads the "scaling is not helping" verdicts (:mod:`.saturation`, with those a
previous daemon saved: :mod:`.recalled`) and, for the docktor policy, the measured per-replica
throughput ``mu`` and the closed loop's correction (:mod:`.feedback`, :mod:`.recalled_loop`).
Two readers need the same figures afterwards:

- the effect check (:func:`.effect.expect`) predicts an action's drain with the throughput the
  policy sized with: a correction restored after a restart included, so "predicted vs observed"
  judges what the policy used, not a second estimate without it;
- the state file's ``memory`` piece (:mod:`docktor.agent.runtime.policy_memory`) saves them.

Both read them here instead of running the verdicts, ``estimate_mu`` and the loop over the
history again (about 2.8 ms of CPU per save of a docktor service with a full history). The plan
(:func:`.decide.plan`) and the decision carry a :class:`Carried`; :func:`.decide.remember` keeps it
on ``state.carried`` with :meth:`Carried.after`. Nothing here decides: the decisions are the same
with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docktor.agent.core.saturation import Saturation


@dataclass(frozen=True)
class Sized:
    """What the docktor policy sized with at ``at``: ``mu`` as measured (None: nothing measured)
    and the closed loop's correction of it (``factor`` 1: none)."""

    at: float
    mu: float | None
    factor: float = 1.0
    observed_age: float = 0.0
    predicted_age: float = 0.0

    @property
    def corrected(self) -> float | None:
        """The per-replica throughput the policy sized with: ``mu x factor``."""
        return None if self.mu is None else self.mu * self.factor


@dataclass(frozen=True)
class Carried:
    """What one decision used: the verdicts (None: its reading had no ``queue.rate_out``, so none
    were read) and the docktor policy's sizing (None: it did not size on full data this tick)."""

    saturation: Saturation | None = None
    sized: Sized | None = None

    def after(self, older: Carried | None) -> Carried:
        """This tick's figures, and ``older``'s where this tick read none (a tick with a metric
        missing keeps what the last full reading found, as the history it would be recomputed
        from still holds it)."""
        if older is None:
            return self
        return Carried(self.saturation if self.saturation is not None else older.saturation,
                       self.sized if self.sized is not None else older.sized)
