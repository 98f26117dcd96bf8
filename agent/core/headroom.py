"""``headroom``: spare replicas added to a sizing policy's count, before the guardrails.

A pure function of (config, observations, state, time), run by the daemon and the simulator
alike from :func:`docktor.agent.core.decide.plan`. It is insurance a user buys against load the
policy cannot see coming (a flash crowd): capacity held on no evidence, so it is off by default
and its price is measured in docs/benchmarks.md.

- ``headroom: 2``: two replicas above the policy's count.
- ``headroom: 30s``: as many replicas as it takes to start, within ``target_wait``, 30 seconds of
  arrivals at the recent peak rate coming all at once: ``ceil(peak x 30 / (mu x target_wait))``,
  where ``peak`` is the highest ``queue.rate_in`` read in the last ``PEAK_WINDOW`` seconds and
  ``mu`` the throughput per replica the ``docktor`` policy measures. With ``30s`` and the default
  ``target_wait: 30s`` that is the peak rate's own replica count held again as spare.

Headroom only adds, so it never asks for fewer replicas than the policy; the guardrails (bounds,
step limits, cooldowns, stabilization, the rules' vetoes) still clamp the sum. A count the policy
keeps rather than sizes (:attr:`Proposal.keeps`) is only raised to ``min_replicas`` plus the
headroom; nothing is added while metrics are missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from docktor.agent.config.model import ServiceConfig
from docktor.agent.core.proposal import Proposal
from docktor.agent.core.state import ServiceState

#: a count with headroom comes down only when it is more than this share of the headroom (at
#: least one replica) above the policy's count plus the headroom
DEAD_BAND = 0.25
#: how far back the peak rate of ``headroom: <seconds>`` is taken (as the docktor policy's surge memory)
PEAK_WINDOW = 1800.0


def peak_rate(obs: Mapping[str, float], state: ServiceState, now: float) -> float:
    """The highest ``queue.rate_in`` read in the last :data:`PEAK_WINDOW` seconds, this tick's included."""
    rates = [o["queue.rate_in"] for t, o in state.history if now - PEAK_WINDOW < t < now and "queue.rate_in" in o]
    if "queue.rate_in" in obs:
        rates.append(obs["queue.rate_in"])
    return max(rates, default=0.0)


def headroom_replicas(svc: ServiceConfig, obs: Mapping[str, float], state: ServiceState, now: float) -> tuple[int, str]:
    """The replicas ``svc.headroom`` adds now, and how they read in a decision's reason."""
    h = svc.headroom
    if h.replicas:
        return h.replicas, f"+{h.replicas} headroom"
    if not h.seconds:
        return 0, ""
    peak = peak_rate(obs, state, now)
    # the docktor policy's throughput estimate (numpy-free, but its module imports numpy: loaded
    # on first use, as the policy itself is, so that `docktor validate` does not pay for it)
    from docktor.agent.core.sizing import estimate_mu

    mu, _ = estimate_mu(svc, state.series(obs, now))
    label = f"{h.text()} of the {PEAK_WINDOW / 60:.0f} min peak"
    if mu is None or mu <= 0:
        return 0, f"+0 headroom ({label}: no throughput per replica measured yet)"
    extra = math.ceil(peak * h.seconds / (mu * svc.target_wait) - 1e-9)
    return extra, f"+{extra} headroom ({label} {peak:.4g}/s at {mu:.4g}/s per replica, started within {svc.target_wait:g}s)"


def with_headroom(
    svc: ServiceConfig, proposal: Proposal, obs: Mapping[str, float], current: int, state: ServiceState, now: float
) -> Proposal:
    """``proposal`` with the service's headroom added, and said in its reason; unchanged without any.

    The headroom goes on top of the policy's count as the bounds make it (at least
    ``min_replicas``): an idle service whose policy asks for 0 under ``min_replicas: 1`` holds
    1 + headroom, not a count that flips between headroom and 1 + headroom. And a count with
    headroom never goes down by a single replica: the spare replicas drain the queue the policy
    plans with, so its count wavers by one from tick to tick (on the step trace 16 <-> 17 every few
    checks, 42 reversals), and following it would buy nothing but start-ups.
    """
    # the rules policy steps from the current count rather than sizing (the loader refuses
    # headroom there): added to each step it would climb to max_replicas
    if not svc.headroom or svc.policy == "rules":
        return proposal
    extra, why = headroom_replicas(svc, obs, state, now)
    if proposal.keeps:
        # a kept count already carries the headroom of the decision that set it (adding it again
        # would ratchet up every tick); it is only raised to the least a service with headroom runs
        least = svc.min_replicas + extra
        return Proposal(least, f"{proposal.reason}; {why} over min_replicas", keeps=True) if least > proposal.target else proposal
    target = max(proposal.target, svc.min_replicas) + extra
    slack = max(1, math.ceil(extra * DEAD_BAND))
    if extra and target < current <= target + slack:
        return Proposal(current, f"{proposal.reason}; {why}; keeping {current}: within {slack} of that")
    return Proposal(target, f"{proposal.reason}; {why}")
