"""The Kubernetes HPA controller and KEDA's scale executor, as state machines over simulated time.

These are models of the upstream code, written from reading it (not copied), so the ``hpa``,
``hpa-tuned`` and ``keda`` baselines are the peers users actually run, not our idea of them:

- ``kubernetes/pkg/controller/podautoscaler/horizontal.go`` (``reconcileAutoscaler``): the legacy
  path ``normalizeDesiredReplicas`` taken when the HPA has no ``spec.behavior`` (what KEDA creates
  unless the user sets one), and the behavior path ``normalizeDesiredReplicasWithBehaviors``;
- ``replica_calculator.go`` (``GetExternalPerPodMetricReplicas``): an external metric with an
  ``AverageValue`` target, which is how KEDA exposes a queue's lag;
- ``kedacore/keda/pkg/scaling/executor/scale_scaledobjects.go`` (``RequestScale``,
  ``scaleToZeroOrIdle``, ``scaleFromZeroOrIdle``): activation and the cooldown back to zero.

Time is the simulator's clock in seconds. Go compares instants strictly (``Before``/``After``),
and so do these models, so an event exactly one period old no longer counts, as upstream.
``tests/unit/test_baselines_upstream.py`` replays the upstream unit-test tables against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

# ------------------------------------------------------------------ constants (upstream defaults)

#: --horizontal-pod-autoscaler-sync-period
HPA_SYNC_S = 15.0
#: --horizontal-pod-autoscaler-tolerance
HPA_TOLERANCE = 0.1
#: --horizontal-pod-autoscaler-downscale-stabilization (the legacy path's only window)
HPA_DOWNSCALE_STABILIZATION_S = 300.0
#: legacy path: at most max(2 x current, 4) replicas per sync (horizontal.go calculateScaleUpLimit)
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0

#: KEDA ScaledObject defaults (scale_executor.go, withtriggers_types.go, nats_jetstream_scaler.go)
KEDA_POLLING_S = 30.0
KEDA_COOLDOWN_S = 300.0
KEDA_INITIAL_COOLDOWN_S = 0.0
KEDA_LAG_THRESHOLD = 10.0
KEDA_ACTIVATION_LAG_THRESHOLD = 0.0

Select = Literal["Max", "Min", "Disabled"]


# ------------------------------------------------------------------ behavior


@dataclass(frozen=True)
class ScalingPolicy:
    kind: Literal["Pods", "Percent"]
    value: int
    period: float  # seconds


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window: float
    select: Select = "Max"
    policies: tuple[ScalingPolicy, ...] = ()

    @property
    def longest_period(self) -> float:
        return max((p.period for p in self.policies), default=0.0)


#: the API server's defaults for a behavior (pkg/apis/autoscaling/v2 GenerateHPAScaleUpRules):
#: +100 % or +4 pods per 15 s, whichever is more, no stabilization
DEFAULT_SCALE_UP = ScalingRules(0.0, "Max", (ScalingPolicy("Percent", 100, 15.0), ScalingPolicy("Pods", 4, 15.0)))
#: ... and GenerateHPAScaleDownRules: -100 % per 15 s, after the controller's 300 s window
DEFAULT_SCALE_DOWN = ScalingRules(HPA_DOWNSCALE_STABILIZATION_S, "Max", (ScalingPolicy("Percent", 100, 15.0),))


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass
class ScaleEvent:
    change: int
    at: float
    outdated: bool = False


@dataclass
class Recommendation:
    replicas: int
    at: float


# ------------------------------------------------------------------ the replica calculator


def external_per_pod_replicas(status_replicas: int, usage: float, target_per_pod: float, tolerance: float = HPA_TOLERANCE) -> int:
    """``GetExternalPerPodMetricReplicas``: the metric's total over the per-pod target, unless within tolerance."""
    ratio = usage / (target_per_pod * status_replicas) if status_replicas else math.inf
    if abs(1.0 - ratio) > tolerance:
        return math.ceil(usage / target_per_pod)
    return status_replicas


def replicas_change_per_period(period: float, events: list[ScaleEvent], now: float) -> int:
    """``getReplicasChangePerPeriod``: the changes strictly after ``now - period``."""
    cutoff = now - period
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit_with_rules(current: int, up: list[ScaleEvent], down: list[ScaleEvent], rules: ScalingRules, now: float) -> int:
    """``calculateScaleUpLimitWithScalingRules``: the most replicas the policies allow now."""
    if rules.select == "Disabled":
        return current
    pick = min if rules.select == "Min" else max
    result: int | None = None
    for p in rules.policies:
        start = current - replicas_change_per_period(p.period, up, now) + replicas_change_per_period(p.period, down, now)
        proposed = start + p.value if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit_with_rules(current: int, up: list[ScaleEvent], down: list[ScaleEvent], rules: ScalingRules, now: float) -> int:
    """``calculateScaleDownLimitWithBehaviors``: the fewest replicas the policies allow now."""
    if rules.select == "Disabled":
        return current
    pick = max if rules.select == "Min" else min
    result: int | None = None
    for p in rules.policies:
        start = current - replicas_change_per_period(p.period, up, now) + replicas_change_per_period(p.period, down, now)
        # Go converts the float product to int32, which truncates toward zero
        proposed = start - p.value if p.kind == "Pods" else int(start * (1 - p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def legacy_scale_up_limit(current: int) -> int:
    """``calculateScaleUpLimit``: the legacy path's cap, max(2 x current, 4)."""
    return int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))


def convert_with_rules(current: int, desired: int, lo: int, hi: int) -> tuple[int, str]:
    """``convertDesiredReplicasWithRules``: the legacy path's bounds and scale-up cap."""
    cap = legacy_scale_up_limit(current)
    if hi > cap:
        top, why = cap, "ScaleUpLimit"
    else:
        top, why = hi, "TooManyReplicas"
    if desired < lo:
        return lo, "TooFewReplicas"
    if desired > top:
        return top, why
    return desired, "DesiredWithinRange"


# ------------------------------------------------------------------ the HPA controller (one HPA)


@dataclass
class HorizontalController:
    """One HPA as the controller keeps it: its recommendations and scale events, and the spec."""

    min_replicas: int
    max_replicas: int
    target_per_pod: float
    #: None: the legacy path (no ``spec.behavior``); a Behavior: the behavior path
    behavior: Behavior | None = None
    tolerance: float = HPA_TOLERANCE
    downscale_stabilization: float = HPA_DOWNSCALE_STABILIZATION_S
    recommendations: list[Recommendation] | None = None
    scale_up_events: list[ScaleEvent] = field(default_factory=list)
    scale_down_events: list[ScaleEvent] = field(default_factory=list)

    # -- legacy path

    def stabilize_recommendation(self, desired: int, now: float) -> int:
        """``stabilizeRecommendation``: the highest recommendation not older than the window.

        The recommendation is taken *before* the scale-up cap, so after a spike the controller
        keeps climbing toward it for the whole window (kubernetes issue 96671).
        """
        recs = self._recs()
        best = desired
        cutoff = now - self.downscale_stabilization
        old = None
        for i, rec in enumerate(recs):
            if rec.at < cutoff:
                old = i
            elif rec.replicas > best:
                best = rec.replicas
        self._record(old, desired, now)
        return best

    def normalize(self, current: int, desired: int, now: float) -> tuple[int, str]:
        """``normalizeDesiredReplicas``."""
        stabilized = self.stabilize_recommendation(desired, now)
        return convert_with_rules(current, stabilized, self.min_replicas, self.max_replicas)

    # -- behavior path

    def stabilize_with_behaviors(self, current: int, desired: int, now: float) -> int:
        """``stabilizeRecommendationWithBehaviors``: within the lowest of the up window and the highest of the down window."""
        assert self.behavior is not None
        recs = self._recs()
        up_cutoff = now - self.behavior.scale_up.stabilization_window
        down_cutoff = now - self.behavior.scale_down.stabilization_window
        up_rec = down_rec = desired
        old = None
        for i, rec in enumerate(recs):
            if rec.at > up_cutoff:
                up_rec = min(rec.replicas, up_rec)
            if rec.at > down_cutoff:
                down_rec = max(rec.replicas, down_rec)
            if rec.at < up_cutoff and rec.at < down_cutoff:
                old = i
        recommendation = current
        if recommendation < up_rec:
            recommendation = up_rec
        if recommendation > down_rec:
            recommendation = down_rec
        self._record(old, desired, now)
        return recommendation

    def convert_with_behavior_rate(self, current: int, desired: int, now: float) -> tuple[int, str]:
        """``convertDesiredReplicasWithBehaviorRate``: the policies' rate limits and the bounds."""
        assert self.behavior is not None
        up, down = self.scale_up_events, self.scale_down_events
        if desired > current:
            limit = max(current, scale_up_limit_with_rules(current, up, down, self.behavior.scale_up, now))
            if self.max_replicas > limit:
                top, why = limit, "ScaleUpLimit"
            else:
                top, why = self.max_replicas, "TooManyReplicas"
            if desired > top:
                return top, why
        elif desired < current:
            limit = min(current, scale_down_limit_with_rules(current, up, down, self.behavior.scale_down, now))
            if self.min_replicas < limit:
                bottom, why = limit, "ScaleDownLimit"
            else:
                bottom, why = self.min_replicas, "TooFewReplicas"
            if desired < bottom:
                return bottom, why
        return desired, "DesiredWithinRange"

    def normalize_with_behaviors(self, current: int, desired: int, now: float) -> tuple[int, str]:
        """``normalizeDesiredReplicasWithBehaviors``."""
        stabilized = self.stabilize_with_behaviors(current, desired, now)
        return self.convert_with_behavior_rate(current, stabilized, now)

    def store_scale_event(self, previous: int, new: int, now: float) -> None:
        """``storeScaleEvent``: only the behavior path keeps scale events (the legacy path has no rates)."""
        if self.behavior is None:
            return
        if new > previous:
            events, rules, change = self.scale_up_events, self.behavior.scale_up, new - previous
        else:
            events, rules, change = self.scale_down_events, self.behavior.scale_down, previous - new
        cutoff = now - rules.longest_period
        for e in events:
            if e.at < cutoff:
                e.outdated = True
        old = None
        for i, e in enumerate(events):
            if e.outdated:
                old = i
        event = ScaleEvent(change, now)
        if old is None:
            events.append(event)
        else:
            events[old] = event

    # -- one sync

    def reconcile(self, spec_replicas: int, status_replicas: int, usage: float | None, now: float) -> int:
        """``reconcileAutoscaler`` for one external AverageValue metric: the replicas to set.

        ``usage`` None means the metric could not be read: the controller changes nothing.
        """
        if self.recommendations is None:  # recordInitialRecommendation
            self.recommendations = [Recommendation(spec_replicas, now)]
        if spec_replicas == 0 and self.min_replicas != 0:
            return 0  # ScalingDisabled: scaling from zero is KEDA's job
        if spec_replicas > self.max_replicas:
            desired = self.max_replicas
        elif spec_replicas < self.min_replicas:
            desired = self.min_replicas
        else:
            if usage is None:
                return spec_replicas
            proposal = external_per_pod_replicas(status_replicas, usage, self.target_per_pod, self.tolerance)
            if self.behavior is None:
                desired, _ = self.normalize(spec_replicas, proposal, now)
            else:
                desired, _ = self.normalize_with_behaviors(spec_replicas, proposal, now)
        if desired != spec_replicas:
            self.store_scale_event(spec_replicas, desired, now)
        return desired

    def _recs(self) -> list[Recommendation]:
        if self.recommendations is None:
            self.recommendations = []
        return self.recommendations

    def _record(self, old: int | None, desired: int, now: float) -> None:
        recs = self._recs()
        if old is None:
            recs.append(Recommendation(desired, now))
        else:
            recs[old] = Recommendation(desired, now)


# ------------------------------------------------------------------ KEDA's scale executor


@dataclass
class ScaledObject:
    """A ScaledObject's spec and status as ``RequestScale`` reads and writes them."""

    min_replica_count: int = 0
    idle_replica_count: int | None = None
    cooldown_period: float = KEDA_COOLDOWN_S
    initial_cooldown_period: float = KEDA_INITIAL_COOLDOWN_S
    created_at: float = 0.0
    last_active_time: float | None = None

    @property
    def hpa_min_replicas(self) -> int:
        """``GetHPAMinReplicas``: the HPA KEDA creates never goes below 1."""
        return self.min_replica_count if self.min_replica_count > 0 else 1

    def request_scale(self, current: int, active: bool, now: float, error: bool = False) -> int | None:
        """``RequestScale``: the replicas KEDA itself sets this poll, or None (the HPA's business)."""
        if active:
            if (self.idle_replica_count is not None and current < self.min_replica_count) or current == 0:
                # scaleFromZeroOrIdle
                self.last_active_time = now
                return self.min_replica_count if self.min_replica_count > 0 else 1
            if not error:
                self.last_active_time = now
            return None
        if error:
            return None  # never deactivate on a failing trigger (no fallback configured)
        if (self.idle_replica_count is not None and current > self.idle_replica_count) or (
            current > 0 and self.min_replica_count == 0
        ):
            return self._scale_to_zero_or_idle(now)
        if self.idle_replica_count is None and current < self.min_replica_count:
            return self.min_replica_count
        return None

    def _scale_to_zero_or_idle(self, now: float) -> int | None:
        # LastActiveTime + cooldownPeriod must be strictly Before(now)
        if self.last_active_time is None:
            due = self.created_at + self.initial_cooldown_period < now
        else:
            due = self.last_active_time + self.cooldown_period < now
        if not due:
            return None
        return self.idle_replica_count if self.idle_replica_count is not None else self.min_replica_count
