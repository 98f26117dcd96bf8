"""Prometheus metrics of a running daemon: ``metrics: {listen: 127.0.0.1:9464}`` serves ``/metrics``.

What is exported comes from the daemon's memory, never from re-reading the decision log:

* :meth:`DaemonMetrics.record`, hooked on ``Supervisor.on_record``, sees each decision once (a
  decision that acts is written as an intent and an outcome line, but kept in memory as one record);
* :meth:`DaemonMetrics.tick`, hooked on ``Supervisor.on_tick``, times each tick;
* :meth:`DaemonMetrics.reload`, hooked on ``Supervisor.on_reload``, follows a reload;
* the decision log's state (``Recorder.health()``) is read after every decision.

Every update runs on the event loop's thread, between ticks, and costs microseconds; a scrape
runs on the endpoint's own threads (:mod:`.metrics_http`) and reads prometheus-client's
thread-safe values, so a slow or hostile client never delays a tick. A bug in here is logged once and never ends a tick or the
daemon.

Label values are bounded by the config: services, their sources and rules, the metrics their
plugins provide, and names fixed in the code (decisions, sources, guardrails, LLM outcomes).
The metric list, with types and labels, is in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client import disable_created_metrics as _disable_created_metrics

from docktor.agent.config.model import DocktorConfig, ServiceConfig
from docktor.agent.core.attainment import WINDOWS
from docktor.agent.core.decide import deterministic_source
from docktor.agent.core.policies import POLICIES
from docktor.agent.problems import UsageError
from docktor.agent.runtime.decision_log import DecisionRecord
from docktor.agent.runtime.metrics_http import MetricsServer

log = logging.getLogger("docktor")

PREFIX = "docktor"
#: distinct ``metric`` label values per service for ``docktor_observation`` (plugins provide ~20)
MAX_OBSERVATION_SERIES = 200

#: guardrails that may clamp a proposal (agent/core/guardrails.py, decide.py, advisor/gate.py):
#: their counters start at 0 so the first clamp shows in rate() and increase()
GUARDRAILS = (
    "min_replicas", "max_replicas", "step_limit", "cooldown_up", "cooldown_down", "stabilization", "backoff",
    "direction", "rules", "missing_metrics", "deterministic_scale_up", "deterministic_scale_down", "llm_direction",
    "llm_extra",
)
DECISIONS = ("scale_up", "scale_down", "hold")
#: the windows of docktor_wait_slo_attainment
SLO_WINDOWS = tuple(name for name, _ in WINDOWS)
LLM_OUTCOMES = ("ok", "timeout", "http_error", "connection_error", "cancelled", "error")
TOKEN_TYPES = ("prompt", "completion")

TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCALE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LLM_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def llm_outcome(error: Any) -> str:
    """A landed LLM call's outcome label, from the record's ``llm.error`` (agent/advisor/client.py
    describe_error; beside.py for a cancelled call): a handful of values, never the text itself."""
    if error is None:
        return "ok"
    text = str(error)
    if text.startswith("timeout"):
        return "timeout"
    if text.startswith("HTTP "):
        return "http_error"
    if text.startswith("connection failed"):
        return "connection_error"
    if text.startswith("call ended"):
        return "cancelled"
    return "error"


class DaemonMetrics:
    """The daemon's metrics in a private registry (several daemons may live in one test process)."""

    def __init__(
        self,
        config: DocktorConfig,
        *,
        mode: str | None = None,
        in_flight: Callable[[str], bool] | None = None,
        health: Callable[[], Mapping[str, Any]] | None = None,
        wall: Callable[[], float] = time.time,
    ):
        _disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: Prometheus does not use them, they double the output
        self.config = config
        self.services = {svc.name: svc for svc in config.services}
        self._in_flight = in_flight
        self._health = health
        self._wall = wall
        self._observed: dict[str, set[str]] = {name: set() for name in self.services}
        self._complained: set[str] = set()
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        p = PREFIX
        svc_ = ["service"]

        self.info = Gauge(f"{p}_info", "Always 1: the Docktor version and the daemon's mode (autonomous or advisory).",
                          ["version", "mode"], registry=r)
        self.replicas_current = Gauge(f"{p}_replicas_current", "Replicas the executor reported at the last decision "
                                      "(its desired count); absent while it cannot be read.", svc_, registry=r)
        self.replicas_target = Gauge(f"{p}_replicas_target", "Replica count the last decision chose, after the guardrails "
                                     "(executed only in autonomous mode, and only when the log took its intent).", svc_, registry=r)
        self.replicas_min = Gauge(f"{p}_replicas_min", "The service's min_replicas.", svc_, registry=r)
        self.replicas_max = Gauge(f"{p}_replicas_max", "The service's max_replicas.", svc_, registry=r)
        self.envelope_lower = Gauge(f"{p}_envelope_lower_replicas", "Lowest replica count the guardrails allowed at the "
                                    "last decision (min_replicas, cooldowns, stabilization, step limits, direction).", svc_, registry=r)
        self.envelope_upper = Gauge(f"{p}_envelope_upper_replicas", "Highest replica count the guardrails allowed at "
                                    "the last decision.", svc_, registry=r)
        self.target_wait = Gauge(f"{p}_target_wait_seconds", "The docktor policy's target_wait: the time a message may "
                                 "wait in the queue.", svc_, registry=r)
        self.slo_attainment = Gauge(f"{p}_wait_slo_attainment", "Live share (0..1) of the messages started within "
                                    "target_wait over the window (5m, 60m), estimated from queue.oldest_age and the rates "
                                    "(docktor policy; absent while it cannot be told).", ["service", "window"], registry=r)
        self.observation = Gauge(f"{p}_observation", "Every figure the last decision saw, by its Docktor metric name "
                                 "(queue.backlog, queue.rate_in, replicas.running, cpu.avg, ...; units in docs/sources.md); "
                                 "a figure that could not be read is absent.", ["service", "metric"], registry=r)
        self.last_decision = Gauge(f"{p}_last_decision_timestamp_seconds", "Unix time of the service's last decision.",
                                   svc_, registry=r)

        self.decisions = Counter(f"{p}_decisions", "Decisions, once each (an acting decision's intent and outcome lines "
                                 "count once), by decision, who proposed it (source: rules, policy, llm, fallback, none) "
                                 "and whether the executor was called.", ["service", "decision", "source", "executed"], registry=r)
        self.rule_matches = Counter(f"{p}_rule_matches", "Decisions on which a rule fired, by direction and rule "
                                    "(as configured, without the value read).", ["service", "direction", "rule"], registry=r)
        self.clamps = Counter(f"{p}_guardrail_clamps", "Proposals a guardrail changed, by guardrail.",
                              ["service", "guardrail"], registry=r)
        self.missing = Counter(f"{p}_missing_metric_decisions", "Decisions made without a metric the rules or the "
                               "policy needed, by metric (missing data never scales in).", ["service", "metric"], registry=r)
        self.source_errors = Counter(f"{p}_source_errors", "Failed source reads, by source.", ["service", "source"], registry=r)
        self.executor_errors = Counter(f"{p}_executor_errors", "Executor errors: status (a failed read, or failed or "
                                       "unhealthy replicas reported) and scale (a scale that did not verify).",
                                       ["service", "operation"], registry=r)
        self.tick_duration = Histogram(f"{p}_tick_duration_seconds", "Duration of one tick: observe, decide, act and "
                                       "record.", svc_, buckets=TICK_BUCKETS, registry=r)
        self.scale_duration = Histogram(f"{p}_scale_duration_seconds", "Duration of the executor's scale calls, until "
                                        "verified or failed.", svc_, buckets=SCALE_BUCKETS, registry=r)

        self.llm_calls = Counter(f"{p}_llm_calls", "LLM calls that ended (one call is one conversation, possibly several "
                                 "HTTP requests), by outcome: ok, timeout, http_error, connection_error, cancelled, error "
                                 "(an invalid answer after repair, or another failure); every outcome but ok is a fallback.",
                                 ["service", "outcome"], registry=r)
        self.llm_requests = Counter(f"{p}_llm_http_requests", "HTTP requests the LLM endpoint answered, in calls that ended.",
                                    svc_, registry=r)
        self.llm_duration = Histogram(f"{p}_llm_call_duration_seconds", "Latency of LLM calls that ended, successful or not.",
                                      svc_, buckets=LLM_LATENCY_BUCKETS, registry=r)
        self.llm_tokens = Histogram(f"{p}_llm_call_tokens", "Tokens per LLM call that got an answer (summed over its "
                                    "requests, as the server reported them), by type: prompt or completion.", ["service", "type"], buckets=TOKEN_BUCKETS, registry=r)
        self.llm_in_flight = Gauge(f"{p}_llm_calls_in_flight", "1 while an LLM call runs beside the loop (at most one per "
                                   "service).", svc_, registry=r)
        self.llm_breaker_open = Gauge(f"{p}_llm_breaker_open", "1 while the LLM circuit breaker holds calls back after "
                                      "failed calls, or a call just failed; 0 otherwise.", svc_, registry=r)
        self.llm_failures = Gauge(f"{p}_llm_consecutive_failures", "Failed LLM calls in a row (0: the breaker is closed).",
                                  svc_, registry=r)

        self.log_writable = Gauge(f"{p}_decision_log_writable", "1 when the decision log takes lines; 0 while it cannot "
                                  "be written (a full disk...): then nothing is scaled, decisions are kept in memory.", registry=r)
        self.log_unrecorded = Gauge(f"{p}_decision_log_unrecorded_decisions", "Decisions not written since the log "
                                    "became unwritable (0 when writable).", registry=r)
        self.log_waiting = Gauge(f"{p}_decision_log_waiting_outcomes", "Outcomes of executed actions waiting in memory "
                                 "for the log to take them.", registry=r)
        self.log_failures = Counter(f"{p}_decision_log_write_failures", "Failed writes to the decision log.", registry=r)
        self.log_refused = Counter(f"{p}_decision_log_refused_actions", "Scale actions not taken because their intent "
                                   "could not be written to the decision log.", registry=r)
        self._log_totals = {"write_failures_total": 0, "refused_actions_total": 0}

        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("docktor")
        except PackageNotFoundError:
            release = "unknown"
        self.info.labels(release, mode or config.mode).set(1)
        for svc in config.services:
            self._start_service(svc)
        self.log_writable.set(1)
        self.log_health()

    def _start_service(self, svc: ServiceConfig) -> None:
        """Static figures, and every counter the config makes possible at 0 (so the first event
        shows in rate() and increase(), and a dashboard has series before anything happened)."""
        s = svc.name
        self.replicas_min.labels(s).set(svc.min_replicas)
        self.replicas_max.labels(s).set(svc.max_replicas)
        if svc.policy == "docktor":
            self.target_wait.labels(s).set(svc.target_wait)
        sources = [deterministic_source(svc), "none"]
        if self.config.llm.provider != "none":
            sources += ["llm", "fallback"]
            for outcome in LLM_OUTCOMES:
                self.llm_calls.labels(s, outcome)
            self.llm_requests.labels(s)
            self.llm_duration.labels(s)
            for kind in TOKEN_TYPES:
                self.llm_tokens.labels(s, kind)
            self.llm_in_flight.labels(s).set(0)
            self.llm_breaker_open.labels(s).set(0)
            self.llm_failures.labels(s).set(0)
        for source in sources:
            for decision in DECISIONS:
                self.decisions.labels(s, decision, source, "false")
                if decision != "hold":
                    self.decisions.labels(s, decision, source, "true")
        for direction, rules in (("up", svc.rules.scale_up_when), ("down", svc.rules.scale_down_when)):
            for rule in rules:
                self.rule_matches.labels(s, direction, rule.text())
        for name in GUARDRAILS:
            self.clamps.labels(s, name)
        for metric in _needed(svc):
            self.missing.labels(s, metric)
        for spec in svc.sources:
            self.source_errors.labels(s, spec.name)
        for operation in ("status", "scale"):
            self.executor_errors.labels(s, operation)
        self.tick_duration.labels(s)
        self.scale_duration.labels(s)

    # ------------------------------------------------------------------ feeding

    def record(self, rec: DecisionRecord) -> None:
        """One decision (``Supervisor.on_record``). Never raises: a bug here must not fail a tick."""
        self._guarded("record", self._record, rec)
        self._guarded("log health", self.log_health)

    def tick(self, service: str, seconds: float) -> None:
        """One tick's duration (``Supervisor.on_tick``)."""
        self._guarded("tick", lambda: self.tick_duration.labels(service).observe(seconds))

    def log_health(self) -> None:
        """The decision log's state, from ``Recorder.health()``."""
        if self._health is None:
            return
        h = self._health()
        self.log_writable.set(1 if h.get("writable") else 0)
        self.log_unrecorded.set(float(h.get("unrecorded") or 0))
        self.log_waiting.set(float(h.get("waiting_outcomes") or 0))
        # The recorder counts over the daemon's life; the counters follow its totals.
        for key, counter in (("write_failures_total", self.log_failures), ("refused_actions_total", self.log_refused)):
            total = int(h.get(key) or 0)
            if total > self._log_totals[key]:
                counter.inc(total - self._log_totals[key])
                self._log_totals[key] = total

    def reload(self, config: DocktorConfig, restarted: set[str]) -> None:
        """Follow a reload (``Supervisor.on_reload``): the series of a removed service go away; a
        new or restarted service's start afresh (counters from 0: ``rate()`` reads that as a
        reset); an unchanged service keeps its own. ``restarted`` is the reconcile's own verdict
        (:func:`docktor.agent.runtime.reconcile.fingerprint`), so the two never disagree."""
        self._guarded("reload", self._reload, config, restarted)

    def _reload(self, config: DocktorConfig, restarted: set[str]) -> None:
        old = self.services
        self.config = config
        self.services = {svc.name: svc for svc in config.services}
        for name in old:
            if name not in self.services or name in restarted:
                self._forget(name)
        for svc in config.services:
            if svc.name not in self._observed:
                self._observed[svc.name] = set()
                self._start_service(svc)

    def _forget(self, service: str) -> None:
        """Remove every series of ``service``."""
        for metric in vars(self).values():
            if not isinstance(metric, Gauge | Counter | Histogram) or "service" not in metric._labelnames:
                continue
            names = metric._labelnames
            found = {tuple(s.labels[n] for n in names)
                     for fam in metric.collect() for s in fam.samples if s.labels.get("service") == service}
            for values in found:
                metric.remove(*values)
        self._observed.pop(service, None)

    def _guarded(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:
            if what not in self._complained:  # once: a bug here repeats every tick
                self._complained.add(what)
                log.exception("metrics: updating from %s failed (metrics may be stale; the daemon goes on): %s", what, e)

    def _record(self, rec: DecisionRecord) -> None:
        s = rec.service
        svc = self.services.get(s)
        if svc is None:
            return  # not in the config this exporter follows (a reload tells it which, through on_reload)
        self.decisions.labels(s, rec.decision, rec.source, "true" if rec.executed else "false").inc()
        self.last_decision.labels(s).set(self._wall())
        _set_or_remove(self.replicas_current, s, rec.current_replicas)
        _set_or_remove(self.replicas_target, s, rec.target_replicas)
        env = rec.envelope or {}
        _set_or_remove(self.envelope_lower, s, env.get("lo"))
        _set_or_remove(self.envelope_upper, s, env.get("hi"))
        self._observations(s, rec.observations)
        self._slo(s, rec.slo)
        for g in rec.guardrails:
            self.clamps.labels(s, str(g.get("name")) if g.get("name") in GUARDRAILS else "other").inc()
        for direction, rule in _matched(svc, rec.matched_rules):
            self.rule_matches.labels(s, direction, rule).inc()
        needed = _needed(svc)
        for metric in rec.missing:
            if metric in needed:
                self.missing.labels(s, metric).inc()
        self._errors(svc, rec)
        if rec.executed and rec.outcome is not None:
            self.scale_duration.labels(s).observe(max(0.0, rec.outcome.duration_ms) / 1000)
            if rec.outcome.status != "ok":
                self.executor_errors.labels(s, "scale").inc()
        self._llm(s, rec.llm)

    def _observations(self, service: str, observations: Mapping[str, float]) -> None:
        shown = self._observed[service]
        for metric in shown - observations.keys():
            # Not read this tick: absent, never a stale value (the decision saw none either).
            self.observation.remove(service, metric)
            shown.discard(metric)
        for metric, value in observations.items():
            if metric not in shown:
                if len(shown) >= MAX_OBSERVATION_SERIES:
                    self._complain_once(f"cap:{service}", "metrics: service %s has more than %d distinct observations; "
                                        "not exporting the rest (%s...)", service, MAX_OBSERVATION_SERIES, metric)
                    continue
                shown.add(metric)
            self.observation.labels(service, metric).set(value)

    def _slo(self, service: str, slo: Mapping[str, Any] | None) -> None:
        for window in SLO_WINDOWS:
            value = None if not slo else slo.get(f"attainment_{window}")
            if isinstance(value, int | float):
                self.slo_attainment.labels(service, window).set(value)
            else:  # not told this tick: absent, never a stale share
                try:
                    self.slo_attainment.remove(service, window)
                except KeyError:
                    pass

    def _errors(self, svc: ServiceConfig, rec: DecisionRecord) -> None:
        names = [spec.name for spec in svc.sources]
        for error in rec.errors:
            head = error.split(":", 1)[0]
            if head == "executor":
                self.executor_errors.labels(svc.name, "status").inc()
            elif head == "source" and len(names) == 1:
                self.source_errors.labels(svc.name, names[0]).inc()
            elif head.startswith("source ") and head[len("source "):] in names:
                self.source_errors.labels(svc.name, head[len("source "):]).inc()

    def _llm(self, s: str, llm: Mapping[str, Any] | None) -> None:
        if self._in_flight is not None and self.config.llm.provider != "none":
            self.llm_in_flight.labels(s).set(1 if self._in_flight(s) else 0)
        if not llm:
            return
        if "landed" in llm:  # a call that ended: the decision that carries its answer (or its failure)
            outcome = llm_outcome(llm.get("error"))
            self.llm_calls.labels(s, outcome).inc()
            answered = float(llm.get("requests") or 0)
            self.llm_requests.labels(s).inc(answered)
            if isinstance(llm.get("latency_ms"), int | float):
                self.llm_duration.labels(s).observe(float(llm["latency_ms"]) / 1000)
            for kind in TOKEN_TYPES:
                tokens = llm.get(f"{kind}_tokens")
                if answered and isinstance(tokens, int | float):  # a call nobody answered used no tokens
                    self.llm_tokens.labels(s, kind).observe(float(tokens))
            if outcome == "ok":
                self.llm_failures.labels(s).set(0)
        breaker = llm.get("breaker")
        self.llm_breaker_open.labels(s).set(1 if breaker else 0)
        if isinstance(breaker, Mapping) and isinstance(breaker.get("failures"), int):
            self.llm_failures.labels(s).set(breaker["failures"])

    def _complain_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._complained:
            self._complained.add(key)
            log.warning(msg, *args)


def _set_or_remove(gauge: Gauge, service: str, value: float | None) -> None:
    if value is None:
        try:
            gauge.remove(service)
        except KeyError:
            pass
    else:
        gauge.labels(service).set(value)


def _matched(svc: ServiceConfig, texts: Iterable[str]) -> Iterable[tuple[str, str]]:
    """The configured rules behind ``matched_rules`` texts (``queue.backlog 1500 > 500``: the
    value read sits between the metric and the operator), as ``(direction, rule text)``."""
    texts = list(texts)
    for direction, rules in (("up", svc.rules.scale_up_when), ("down", svc.rules.scale_down_when)):
        for rule in rules:
            head, tail = f"{rule.metric} ", f" {rule.op} {rule.value:g}"
            if any(t.startswith(head) and t.endswith(tail) for t in texts):
                yield direction, rule.text()


def _needed(svc: ServiceConfig) -> set[str]:
    """Metrics a decision of ``svc`` may say are missing: its rules' and its policy's (both bounded
    by the config; decide.plan computes ``missing`` from the same two)."""
    return svc.rule_metrics() | POLICIES[svc.policy].required(svc)


class Exporter:
    """What ``run_foreground`` holds: the daemon's metrics and their endpoint (or nothing)."""

    def __init__(self, metrics: DaemonMetrics | None = None, server: MetricsServer | None = None):
        self.metrics, self.server = metrics, server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def serve(config: DocktorConfig, daemon: Any) -> Exporter:
    """Hook metrics into ``daemon`` and serve them, when ``metrics.listen`` is set.

    Binds before the daemon ticks: an address that cannot be taken (in use, not local) is a
    :class:`UsageError` naming ``metrics.listen``, and the daemon does not start. ``daemon`` is a
    :class:`~docktor.agent.runtime.supervisor.Supervisor` (typed loosely: the runtime imports nothing from here).
    """
    listen = config.metrics.listen
    if listen is None:
        return Exporter()
    metrics = DaemonMetrics(
        config,
        mode=daemon.mode,
        in_flight=lambda name: daemon.beside is not None and daemon.beside.in_flight(name),
        health=daemon.recorder.health,
    )
    try:
        server = MetricsServer(config.metrics.host, config.metrics.port, metrics.registry)
    except OSError as e:
        raise UsageError(f"metrics.listen: cannot listen on {listen}: {e.strerror or e}") from None
    daemon.on_record.append(metrics.record)
    daemon.on_tick.append(metrics.tick)
    daemon.on_reload.append(metrics.reload)
    server.start()
    log.info("metrics: serving %s", server.url)
    return Exporter(metrics, server)
