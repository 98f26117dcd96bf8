"""The hpa/keda baselines against the upstream controllers' own unit-test tables.

Each case below is a row of an upstream Go test, named after it, replayed against
``docktor.agent.sim.kube`` (a model written from reading the upstream code):

- kubernetes ``pkg/controller/podautoscaler/replica_calculator_test.go``: the external
  ``AverageValue`` (per-pod) cases;
- kubernetes ``pkg/controller/podautoscaler/horizontal_test.go``: ``TestNormalizeDesiredReplicas``
  (legacy stabilization), ``TestNormalizeDesiredReplicasWithBehavior``, ``TestScalingWithRules``,
  ``TestConvertDesiredReplicasWithRules``, ``TestCalculateScaleUpLimitWithScalingRules``,
  ``TestCalculateScaleDownLimitWithBehaviors``, ``TestStoreScaleEvents``;
- kedacore/keda ``pkg/scaling/executor/scale_scaledobjects_test.go``: the ``RequestScale`` cases.

Upstream tests use wall-clock ``time.Now()``; here "now" is 1000 s and the tables' offsets are
kept as they are. Go milli-quantities (8600 = 8.6) keep their units: only ratios matter.
"""

from __future__ import annotations

import numpy as np
import pytest

from docktor.agent.sim.baselines import HPAController, KEDAController, make_controller
from docktor.agent.sim.kube import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    HorizontalController,
    Recommendation,
    ScaledObject,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    external_per_pod_replicas,
    replicas_change_per_period,
    scale_down_limit_with_rules,
    scale_up_limit_with_rules,
)
from docktor.agent.sim.simulator import Scenario, simulate, workload
from docktor.agent.sim.trace_file import Trace

NOW = 1000.0


def rules(pods: int, pods_period: float, percent: int, percent_period: float, window: float) -> ScalingRules:
    """horizontal_test.go ``generateScalingRules``: a Pods and/or a Percent policy, selectPolicy Max."""
    policies = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(window, "Max", tuple(policies))


def uniform_events(changes: list[int], period: int) -> list[ScaleEvent]:
    """horizontal_test.go ``generateEventsUniformDistribution``: events centred in equal slices of the period."""
    segment = period / len(changes)
    out = []
    for i, change in enumerate(changes):
        # Go: time.Duration(float) truncates the boundary to whole seconds before * time.Second
        boundary = int(period - segment * (i + 1) + segment / 2)
        out.append(ScaleEvent(change, NOW - boundary))
    return out


# ------------------------------------------------------------------ replica_calculator_test.go


@pytest.mark.parametrize(
    "name, current, usage, target, expected",
    [
        ("TestReplicaCalcScaleUpPerPodCMExternal", 3, 8600, 2150, 4),
        ("TestReplicaCalcScaleDownPerPodCMExternal", 5, 8600, 2867, 3),
        ("TestReplicaCalcTolerancePerPodCMExternal", 3, 8600, 2900, 3),
    ],
)
def test_replica_calculator_external_average_value(name: str, current: int, usage: float, target: float, expected: int) -> None:
    assert external_per_pod_replicas(current, usage, target) == expected, name


# ------------------------------------------------------------------ horizontal_test.go, legacy path


@pytest.mark.parametrize(
    "name, recs, desired, expected, log_length",
    [
        ("empty log", [], 5, 5, 1),
        ("stabilize", [(4, -120), (5, -60)], 3, 5, 3),
        ("no stabilize", [(1, -120), (2, -60)], 3, 3, 3),
        ("no stabilize - old recommendations", [(10, -600), (9, -540)], 3, 3, 2),
        ("stabilize - old recommendations", [(10, -600), (4, -60), (5, -120), (9, -540)], 3, 5, 4),
    ],
)
def test_normalize_desired_replicas_legacy_stabilization(
    name: str, recs: list[tuple[int, float]], desired: int, expected: int, log_length: int
) -> None:
    """TestNormalizeDesiredReplicas: ``stabilizeRecommendation`` with the 5-minute window."""
    hc = HorizontalController(1, 100, 10.0, behavior=None)
    hc.recommendations = [Recommendation(n, NOW + dt) for n, dt in recs]
    assert hc.stabilize_recommendation(desired, NOW) == expected, name
    assert len(hc.recommendations) == log_length, name


@pytest.mark.parametrize(
    "annotation, current, desired, lo, hi, expected, condition",
    [
        ("prenormalized desired replicas within range", 5, 7, 3, 8, 7, "DesiredWithinRange"),
        ("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2, "TooFewReplicas"),
        ("prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0, "DesiredWithinRange"),
        ("maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10, 10, "TooManyReplicas"),
        # Upstream's test binary raises scaleUpLimitFactor to 8 in init() and expects
        # calculateScaleUpLimit(3); with the production factor 2 that is max(2 x 3, 4) = 6.
        ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas", 3, 1000, 1, 2000, 6, "ScaleUpLimit"),
    ],
)
def test_convert_desired_replicas_with_rules(
    annotation: str, current: int, desired: int, lo: int, hi: int, expected: int, condition: str
) -> None:
    """TestConvertDesiredReplicasWithRules: the legacy path's bounds and max(2 x current, 4) cap."""
    from docktor.agent.sim.kube import convert_with_rules

    assert convert_with_rules(current, desired, lo, hi) == (expected, condition), annotation


# ------------------------------------------------------------------ horizontal_test.go, behavior path


@pytest.mark.parametrize(
    "name, recs, current, desired, expected, expected_recs, up_window, down_window",
    [
        ("empty recommendations for scaling down", [], 100, 5, 5, [5], 0, 0),
        ("simple scale down stabilization", [(4, -120), (5, -60)], 100, 3, 5, [4, 5, 3], 0, 180),
        ("simple scale up stabilization", [(4, -120), (5, -60)], 1, 7, 4, [4, 5, 7], 300, 0),
        ("no scale down stabilization", [(1, -120), (2, -60)], 100, 3, 3, [1, 2, 3], 300, 0),
        ("no scale up stabilization", [(4, -120), (5, -60)], 1, 3, 3, [4, 5, 3], 0, 300),
        ("no scale down stabilization, reuse recommendation element", [(10, -600), (9, -540)], 100, 3, 3, [10, 3], 0, 0),
        ("no scale up stabilization, reuse recommendation element", [(10, -600), (9, -540)], 1, 100, 100, [10, 100], 0, 0),
        (
            "scale down stabilization, reuse one of obsolete recommendation element",
            [(10, -600), (4, -60), (5, -120), (9, -540)], 100, 3, 5, [10, 4, 5, 3], 0, 180,
        ),
        (
            "scale up stabilization, reuse one of obsolete recommendation element",
            [(10, -6000), (6, -60), (5, -120), (9, -180)], 1, 100, 5, [100, 6, 5, 9], 300, 0,
        ),
        (
            "scale up and down stabilization, do not scale up when prenormalized rec goes down",
            [(2, -6000), (3, -180)], 2, 1, 2, None, 300, 300,
        ),
        (
            "scale up and down stabilization, do not scale down when prenormalized rec goes up",
            [(2, -6000), (1, -180)], 2, 3, 2, None, 300, 300,
        ),
    ],
)
def test_normalize_desired_replicas_with_behavior(
    name: str,
    recs: list[tuple[int, float]],
    current: int,
    desired: int,
    expected: int,
    expected_recs: list[int] | None,
    up_window: float,
    down_window: float,
) -> None:
    """TestNormalizeDesiredReplicasWithBehavior: ``stabilizeRecommendationWithBehaviors``."""
    behavior = Behavior(ScalingRules(up_window), ScalingRules(down_window))
    hc = HorizontalController(1, 1000, 10.0, behavior=behavior)
    hc.recommendations = [Recommendation(n, NOW + dt) for n, dt in recs]
    assert hc.stabilize_with_behaviors(current, desired, NOW) == expected, name
    if expected_recs is not None:
        assert [r.replicas for r in hc.recommendations] == expected_recs, name


# (name, up events, down events, min, max, scale-up rules, scale-down rules, current, desired, expected, condition)
# None rules are the API server's defaults (GenerateHPAScaleUpRules / GenerateHPAScaleDownRules of nil).
SCALING_WITH_RULES = [
    ("prenormalized desired replicas within range", None, None, 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", None, None, 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("prenormalized desired replicas within range when minReplicas is 0", None, None, 0, 10, None, None, 1, 0, 0, "DesiredWithinRange"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", None, None, 1, 10, None, None, 20, 1000, 10, "TooManyReplicas"),
    ("desired replica count is more than the maximum replica count", None, None, 100, 150, None, None, 100, 1000, 150, "TooManyReplicas"),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", None, None, 1, 2000, rules(0, 0, 1, 60, 0), None, 3, 1000, 4, "ScaleUpLimit"),
    # upstream marks this row testThis and skips it; the model meets it anyway
    ("scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies", None, None, 3, 2000, None, rules(20, 60, 0, 0, 0), 1000, 3, 980, "ScaleDownLimit"),
    ("scaleUp with default behavior", None, None, 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", None, None, 1, 1000, rules(100, 60, 100, 60, 0), None, 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", None, None, 1, 1000, rules(2, 60, 100, 60, 0), None, 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy", None, None, 1, 1000, rules(100, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy", None, None, 1, 1000, rules(10000, 60, 0, 0, 0), None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with pod policy limitation", None, None, 1, 1000, rules(30, 60, 0, 0, 0), None, 10, 50, 40, "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", None, None, 1, 1000, rules(0, 0, 200, 60, 0), None, 10, 50, 30, "ScaleUpLimit"),
    ("scaleDown with percent policy larger than pod policy", None, None, 1, 1000, None, rules(20, 60, 1, 60, 300), 100, 2, 80, "ScaleDownLimit"),
    ("scaleDown with pod policy larger than percent policy", None, None, 1, 1000, None, rules(2, 60, 1, 60, 300), 100, 2, 98, "ScaleDownLimit"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy", None, None, 1, 1000, None, rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large pod policy", None, None, 1, 1000, None, rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy", None, None, 5, 1000, None, rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation", None, None, 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", None, None, 1, 1000, None, rules(0, 0, 50, 60, 300), 10, 5, 5, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy and events", ([1, 5, 9], 120), None, 1, 200, rules(300, 60, 0, 0, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy and events", ([1, 5, 9], 120), None, 1, 200, rules(0, 0, 10000, 60, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events", ([1, 5, 9], 120), None, 1, 1000, rules(5, 120, 0, 0, 0), None, 100, 500, 100, "ScaleUpLimit"),
    ("scaleUp with pod policy and previous scale up events", ([1, 5, 9], 120), None, 1, 1000, rules(150, 120, 0, 0, 0), None, 100, 500, 235, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up events", ([1, 5, 9], 120), None, 1, 1000, rules(0, 0, 200, 120, 0), None, 100, 500, 255, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up and down events", ([4], 120), ([2], 120), 1, 1000, rules(0, 0, 300, 300, 0), None, 6, 24, 16, "ScaleUpLimit"),
    ("scaleDown with default policy and previous events", None, ([1, 5, 9], 120), 1, 1000, None, None, 10, 5, 5, "DesiredWithinRange"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", None, ([1, 5, 9], 120), 1, 1000, None, rules(115, 120, 0, 0, 300), 100, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large pod policy and previous events", None, ([1, 5, 9], 120), 5, 1000, None, rules(130, 120, 0, 0, 300), 100, 0, 5, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy and previous events", None, ([1, 5, 9], 120), 5, 1000, None, rules(0, 0, 100, 120, 300), 100, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation and previous events", None, ([1, 5, 9], 120), 1, 1000, None, rules(5, 120, 0, 0, 300), 100, 2, 100, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation and previous events", None, ([2, 4, 6], 120), 1, 1000, None, rules(0, 0, 50, 120, 300), 100, 0, 56, "ScaleDownLimit"),
    ("scaleDown with percent policy and previous scale up and down events", ([2], 120), ([4], 120), 1, 1000, None, rules(0, 0, 50, 180, 0), 10, 1, 6, "ScaleDownLimit"),
    ("scaleDown with previous events preventing further scale down", None, ([10, 10, 10], 120), 1, 1000, None, rules(0, 0, 10, 120, 300), 100, 0, 100, "ScaleDownLimit"),
    ("scaleDown with with previous events still allowing more scale down", None, ([10, 10, 10], 120), 1, 1000, None, rules(0, 0, 1000, 120, 300), 10, 5, 5, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for up", ([8, 12, 9, 11], 120), None, 1, 1000, rules(1000, 60, 0, 0, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for up", ([8, 12, 9, 11], 120), None, 1, 1000, rules(1000, 120, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check that events were marked 'outdated' for two different policies in the behavior for up", ([8, 12, 9, 11], 120), None, 1, 1000, rules(1000, 30, 100, 60, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for down", None, ([8, 12, 9, 11], 120), 1, 1000, None, rules(1000, 60, 0, 0, 300), 100, 5, 5, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for down", None, ([8, 12, 9, 11], 120), 1, 1000, None, rules(1000, 120, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"),
    ("check that events were marked 'outdated' for two different policies in the behavior for down", None, ([8, 12, 9, 11], 120), 1, 1000, None, rules(1000, 30, 100, 60, 300), 100, 5, 5, "DesiredWithinRange"),
]


@pytest.mark.parametrize(
    "name, up_events, down_events, lo, hi, up_rules, down_rules, current, desired, expected, condition",
    SCALING_WITH_RULES,
    ids=[row[0] for row in SCALING_WITH_RULES],
)
def test_scaling_with_rules(
    name: str,
    up_events: tuple[list[int], int] | None,
    down_events: tuple[list[int], int] | None,
    lo: int,
    hi: int,
    up_rules: ScalingRules | None,
    down_rules: ScalingRules | None,
    current: int,
    desired: int,
    expected: int,
    condition: str,
) -> None:
    """TestScalingWithRules: ``convertDesiredReplicasWithBehaviorRate`` with rates over past scale events."""
    hc = HorizontalController(lo, hi, 10.0, behavior=Behavior(up_rules or DEFAULT_SCALE_UP, down_rules or DEFAULT_SCALE_DOWN))
    hc.scale_up_events = uniform_events(*up_events) if up_events else []
    hc.scale_down_events = uniform_events(*down_events) if down_events else []
    assert hc.convert_with_behavior_rate(current, desired, NOW) == (expected, condition), name


def test_scale_limits_with_select_policy_min() -> None:
    """TestCalculateScaleUpLimitWithScalingRules and TestCalculateScaleDownLimitWithBehaviors (selectPolicy Min)."""
    both = (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60))
    assert scale_up_limit_with_rules(1, [], [], ScalingRules(300, "Min", both), NOW) == 2
    assert scale_down_limit_with_rules(5, [], [], ScalingRules(300, "Min", both), NOW) == 3


@pytest.mark.parametrize(
    "name, prev, new, scaling_rules, expected_change",
    [
        ("empty entries with default behavior", [], [], None, 0),
        ("empty entries with two-policy-behavior", [], [(5, False)], rules(10, 60, 100, 60, 0), 0),
        ("one outdated entry to be kept untouched without behavior", [(7, -61)], [(7, False)], None, 0),
        ("one outdated entry to be replaced with behavior", [(7, -61)], [(5, False)], rules(10, 60, 100, 60, 0), 0),
        ("one actual entry to be not touched with behavior", [(7, -58)], [(7, False), (5, False)], rules(10, 60, 100, 60, 0), 7),
        ("two entries, one of them to be replaced", [(7, -61), (6, -59)], [(5, False), (6, False)], rules(10, 60, 0, 0, 0), 6),
        (
            "replace one entry, use policies with different periods",
            [(8, -29), (6, -59), (7, -61), (9, -61)],
            [(8, False), (6, False), (7, True), (5, False)],
            rules(10, 60, 100, 30, 0),
            14,
        ),
        ("two entries, both actual", [(7, -58), (6, -59)], [(7, False), (6, False), (5, False)], rules(10, 120, 100, 30, 0), 13),
    ],
)
def test_store_scale_events(
    name: str, prev: list[tuple[int, float]], new: list[tuple[int, bool]], scaling_rules: ScalingRules | None, expected_change: int
) -> None:
    """TestStoreScaleEvents: events kept per direction, outdated ones reused; none without a behavior."""
    for direction in ("up", "down"):
        if scaling_rules is None:
            behavior = None
        elif direction == "up":
            behavior = Behavior(scale_up=scaling_rules)
        else:
            behavior = Behavior(scale_down=scaling_rules)
        hc = HorizontalController(1, 100, 10.0, behavior=behavior)
        events = [ScaleEvent(c, NOW + dt) for c, dt in prev]
        if direction == "up":
            hc.scale_up_events = events
        else:
            hc.scale_down_events = events
        assert replicas_change_per_period(60, events, NOW) == expected_change, name
        hc.store_scale_event(10, 15 if direction == "up" else 5, NOW)
        stored = hc.scale_up_events if direction == "up" else hc.scale_down_events
        if behavior is None:
            assert [(e.change, e.outdated) for e in stored] == [(c, False) for c, _ in prev], name
        else:
            assert [(e.change, e.outdated) for e in stored] == new, name


# ------------------------------------------------------------------ kubernetes issue 96671


def test_legacy_path_keeps_climbing_toward_a_spike_after_it_is_gone() -> None:
    """kubernetes issue 96671: without spec.behavior the 300 s maximum is taken before the rate cap.

    One sync sees a backlog worth 200 replicas, every later sync a backlog worth 3. The legacy
    path keeps doubling toward 200 for the whole window; the behavior path holds where it got.
    """
    legacy = HorizontalController(1, 100, 10.0, behavior=None)
    behavior = HorizontalController(1, 100, 10.0, behavior=Behavior())
    seen_legacy, seen_behavior = [], []
    n_legacy = n_behavior = 2
    for k in range(8):
        usage = 2000.0 if k == 0 else 30.0
        n_legacy = legacy.reconcile(n_legacy, n_legacy, usage, 15.0 * k)
        n_behavior = behavior.reconcile(n_behavior, n_behavior, usage, 15.0 * k)
        seen_legacy.append(n_legacy)
        seen_behavior.append(n_behavior)
    assert seen_legacy == [4, 8, 16, 32, 64, 100, 100, 100]
    assert seen_behavior == [6, 6, 6, 6, 6, 6, 6, 6]
    # and after the window the legacy path finally comes down to what the metric says
    assert legacy.reconcile(100, 100, 30.0, 15.0 * 21) == 3


def test_zero_second_scale_down_window_scales_down_at_once() -> None:
    """Regression: a 0 s scale-down window used to raise ``max() arg is an empty sequence``."""
    scenario = Scenario(max_replicas=20)
    zero = Behavior(scale_down=ScalingRules(0.0, "Max", DEFAULT_SCALE_DOWN.policies))
    hpa = HPAController(scenario, behavior=zero)
    assert hpa.tick({"queue.backlog": 500.0}, 10, 0.0) == 20
    assert hpa.tick({"queue.backlog": 0.0}, 20, 15.0) == 1
    trace = Trace("t", np.array([200] * 30 + [0] * 60, dtype=np.int64))
    run = simulate(trace, scenario, HPAController(scenario, behavior=zero))
    assert run.messages == 6000


# ------------------------------------------------------------------ KEDA scale_scaledobjects_test.go


@pytest.mark.parametrize(
    "name, minimum, idle, current, active, expected",
    [
        ("TestScaleToMinReplicasWhenNotActive", 0, None, 10, False, 0),
        ("TestScaleToMinReplicasFromLowerInitialReplicaCount", 5, None, 1, False, 5),
        ("TestScaleFromMinReplicasWhenActive", 0, None, 0, True, 1),
        ("TestScaleToIdleReplicasWhenNotActive", 5, 0, 10, False, 0),
        ("TestScaleFromIdleToMinReplicasWhenActive", 5, 0, 0, True, 5),
    ],
)
def test_keda_request_scale(name: str, minimum: int, idle: int | None, current: int, active: bool, expected: int) -> None:
    # upstream's ScaledObjects have a zero CreationTimestamp and no LastActiveTime
    so = ScaledObject(min_replica_count=minimum, idle_replica_count=idle, created_at=0.0)
    assert so.request_scale(current, active, NOW) == expected, name
    if active:
        assert so.last_active_time == NOW  # assert.NotNil(t, result.LastActiveTime)


def test_keda_cooldown_comparison_is_strict() -> None:
    """``scaleToZeroOrIdle``: LastActiveTime + cooldownPeriod must be strictly Before(now)."""
    so = ScaledObject(min_replica_count=0, last_active_time=100.0)
    assert so.request_scale(3, False, 100.0 + 300.0) is None  # exactly the cooldown: still cooling down
    assert so.request_scale(3, False, 100.0 + 300.001) == 0
    fresh = ScaledObject(min_replica_count=0, created_at=50.0)  # initialCooldownPeriod 0, never active
    assert fresh.request_scale(2, False, 50.0) is None
    assert fresh.request_scale(2, False, 50.5) == 0
    assert ScaledObject(min_replica_count=0, last_active_time=0.0).request_scale(3, False, 400.0, error=True) is None


def test_keda_in_the_simulator_activates_from_zero_and_returns_after_the_cooldown() -> None:
    scenario = Scenario(service_s=0.01, cv=0.0, startup_s=5, slo_s=60, interval_s=5, min_replicas=0, max_replicas=10)
    trace = Trace("t", np.array([20] * 10 + [0] * 900, dtype=np.int64))
    run = simulate(trace, scenario, KEDAController(scenario))
    changes = [(t, d) for (t, d, _), (_, before, _) in zip(run.timeline[1:], run.timeline) if d != before]
    # activation at the first poll that sees a backlog (t=30), then the HPA (legacy path) sizes it
    assert changes[0] == (30.0, 1)
    # The last active poll is the last one that saw a backlog (arrived, not completed); zero comes
    # at the first poll strictly more than 300 s after it.
    last_active = max(t for t in range(0, len(run.backlog), 30) if run.backlog[t] > 0)
    assert changes[-1] == (last_active + 330.0, 0)


def test_keda_with_a_minimum_is_exactly_its_hpa_on_the_legacy_path() -> None:
    scenario = Scenario(max_replicas=40)
    trace = Trace("t", np.array([50] * 60 + [900] * 30 + [50] * 400, dtype=np.int64))
    load = workload(trace, scenario)
    keda = simulate(trace, scenario, make_controller("keda", scenario), load=load)  # type: ignore[arg-type]
    legacy = simulate(trace, scenario, HPAController(scenario, name="legacy", behavior=None), load=load)
    assert keda.timeline == legacy.timeline
    assert keda.replica_seconds == legacy.replica_seconds
