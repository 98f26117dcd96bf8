"""Write the Docktor Grafana dashboard: ``python examples/grafana/dashboard.py`` -> dashboards/docktor.json.

The JSON is generated so that every panel is written the same way; tests/e2e/test_metrics_prometheus.py
checks that the committed file is this script's output and that every PromQL expression in it
returns data from a real Prometheus scraping a real daemon. Plain Python, no Docktor import.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "docktor.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SVC = 'service=~"$service"'
RATE = "$__rate_interval"


class Layout:
    """Panels left to right, rows top to bottom, on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_h = 0

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def newline(self) -> None:
        self.x, self.y, self.row_h = 0, self.y + self.row_h, 0

    def add(self, panel: dict[str, Any], w: int, h: int = 8) -> None:
        if self.x + w > 24:
            self.newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True, **extra}


def timeseries(title: str, description: str, targets: list[dict[str, Any]], unit: str = "short", *,
               overrides: list[dict[str, Any]] | None = None, stack: bool = False, bars: bool = False,
               decimals: int | None = None) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
                              "showPoints": "never", "spanNulls": False,
                              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, targets: list[dict[str, Any]], unit: str = "short", *,
         mappings: list[dict[str, Any]] | None = None, thresholds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": {
            "unit": unit, "mappings": mappings or [],
            "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
        }, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none", "textMode": "value_and_name", "justifyMode": "auto"},
    }


def by_name(regex: str, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byRegexp", "options": regex}, "properties": props}


def right_axis(unit: str) -> list[dict[str, Any]]:
    return [{"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": unit}]


DASHED = [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}, {"id": "custom.fillOpacity", "value": 0}]


def obs(metric: str) -> str:
    return f'docktor_observation{{{SVC},metric="{metric}"}}'


def panels() -> list[dict[str, Any]]:
    lay = Layout()

    lay.row("Replicas and load")
    lay.add(timeseries(
        "Replicas vs load",
        "Replicas the executor reports (current), the last decision's target, replicas running, and the bounds; "
        "arrivals (queue.rate_in) on the right axis.",
        [
            target(f"docktor_replicas_current{{{SVC}}}", "{{service}} current", "A"),
            target(f"docktor_replicas_target{{{SVC}}}", "{{service}} target", "B"),
            target(obs("replicas.running"), "{{service}} running", "C"),
            target(f"docktor_replicas_min{{{SVC}}}", "{{service}} min", "D"),
            target(f"docktor_replicas_max{{{SVC}}}", "{{service}} max", "E"),
            target(obs("queue.rate_in"), "{{service}} arrivals", "F"),
        ],
        "short",
        overrides=[by_name(".* arrivals", right_axis("msg/s")), by_name(".* (min|max)", DASHED)],
        decimals=0,
    ), w=12, h=9)
    lay.add(timeseries(
        "Throughput",
        "Messages arriving and completed per second (queue.rate_in, queue.rate_out), and completed per replica.",
        [
            target(obs("queue.rate_in"), "{{service}} in", "A"),
            target(obs("queue.rate_out"), "{{service}} out", "B"),
            target(obs("queue.rate_out_per_replica"), "{{service}} out per replica", "C"),
        ],
        "msg/s",
    ), w=12, h=9)

    lay.row("Backlog and waits")
    lay.add(timeseries(
        "Backlog",
        "Work not yet done (queue.backlog: pending + in flight) and per running replica.",
        [
            target(obs("queue.backlog"), "{{service}} backlog", "A"),
            target(obs("queue.backlog_per_replica"), "{{service}} per replica", "B"),
        ],
        "short",
        overrides=[by_name(".* per replica", [{"id": "custom.axisPlacement", "value": "right"}])],
    ), w=6)
    lay.add(timeseries(
        "Estimated wait vs target",
        "Backlog divided by the completion rate: how long a message arriving now waits (absent while nothing "
        "completes); the docktor policy's target_wait dashed.",
        [
            target(f"{obs('queue.backlog')} / ignoring(metric) ({obs('queue.rate_out')} > 0)", "{{service}} estimated wait", "A"),
            target(f"docktor_target_wait_seconds{{{SVC}}}", "{{service}} target_wait", "B"),
        ],
        "s",
        overrides=[by_name(".* target_wait", DASHED)],
    ), w=6)
    lay.add(timeseries(
        "Idle workers waiting for work",
        "Pull requests waiting for messages (NATS queue.waiting): workers with nothing to do.",
        [target(obs("queue.waiting"), "{{service}}", "A")],
        "short",
    ), w=6)
    lay.add(timeseries(
        "Started within target_wait",
        "Live wait-SLO attainment: the share of messages started within the docktor policy's target_wait over "
        "the last 5 and 60 minutes, estimated from queue.oldest_age and the rates (absent where the source cannot "
        "tell the age).",
        [target(f'docktor_wait_slo_attainment{{{SVC},window="5m"}}', "{{service}} 5m", "A"),
         target(f'docktor_wait_slo_attainment{{{SVC},window="60m"}}', "{{service}} 60m", "B")],
        "percentunit", decimals=1,
    ), w=6)

    lay.row("Decisions and their reasons")
    lay.add(timeseries(
        "Decisions per minute, by decision and source",
        "Every decision once (holds included), by what it decided and who proposed it: rules, policy, llm, "
        "fallback (the LLM failed), none (no replica count).",
        [target(f"sum by (decision, source) (rate(docktor_decisions_total{{{SVC}}}[{RATE}])) * 60",
                "{{decision}} by {{source}}", "A")],
        "short", stack=True,
    ), w=8)
    lay.add(timeseries(
        "Scale actions executed",
        "Decisions the executor carried out, by direction (advisory mode executes none).",
        [target(f'sum by (service, decision) (increase(docktor_decisions_total{{{SVC},executed="true"}}[{RATE}]))',
                "{{service}} {{decision}}", "A")],
        "short", bars=True, decimals=0,
    ), w=8)
    lay.add(timeseries(
        "Rules that fired, per minute",
        "Decisions on which each configured rule matched (up: any; down: all).",
        [target(f"sum by (service, direction, rule) (rate(docktor_rule_matches_total{{{SVC}}}[{RATE}])) * 60",
                "{{service}} {{direction}}: {{rule}}", "A")],
        "short",
    ), w=8)
    lay.add(timeseries(
        "Decisions without the data they needed, per minute",
        "Decisions made while a metric the rules or the policy need was missing: they may scale up on what was "
        "read, never in.",
        [target(f"sum by (service, metric) (rate(docktor_missing_metric_decisions_total{{{SVC}}}[{RATE}])) * 60",
                "{{service}} {{metric}}", "A")],
        "short",
    ), w=12)
    lay.add(timeseries(
        "Source and executor errors, per minute",
        "Failed source reads by source; executor errors by operation (status: a failed read or failed replicas; "
        "scale: a change that did not verify).",
        [
            target(f"sum by (service, source) (rate(docktor_source_errors_total{{{SVC}}}[{RATE}])) * 60",
                   "{{service}} source {{source}}", "A"),
            target(f"sum by (service, operation) (rate(docktor_executor_errors_total{{{SVC}}}[{RATE}])) * 60",
                   "{{service}} executor {{operation}}", "B"),
        ],
        "short",
    ), w=12)

    lay.row("Guardrails")
    lay.add(timeseries(
        "Guardrail clamps per minute",
        "Proposals a guardrail changed, by guardrail: step_limit, cooldown_up/down, stabilization, min/max_replicas, "
        "backoff, direction, missing_metrics, llm_direction, deterministic_scale_up/down, llm_extra.",
        [target(f"sum by (guardrail) (rate(docktor_guardrail_clamps_total{{{SVC}}}[{RATE}])) * 60", "{{guardrail}}", "A")],
        "short", stack=True,
    ), w=12)
    lay.add(timeseries(
        "Envelope and target",
        "The range of replica counts the guardrails allowed at each decision, and the target chosen inside it.",
        [
            target(f"docktor_envelope_lower_replicas{{{SVC}}}", "{{service}} allowed from", "A"),
            target(f"docktor_envelope_upper_replicas{{{SVC}}}", "{{service}} allowed to", "B"),
            target(f"docktor_replicas_target{{{SVC}}}", "{{service}} target", "C"),
        ],
        "short", overrides=[by_name(".* allowed .*", DASHED)], decimals=0,
    ), w=12)

    lay.row("LLM advisor")
    lay.add(timeseries(
        "LLM call latency",
        "Latency of LLM calls that ended (they run beside the loop: no tick waits for them).",
        [
            target(f"histogram_quantile({q}, sum by (le) (rate(docktor_llm_call_duration_seconds_bucket{{{SVC}}}[{RATE}])))",
                   f"p{round(q * 100)}", ref)
            for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
        ],
        "s",
    ), w=8)
    lay.add(timeseries(
        "LLM fallback rate",
        "Share of LLM calls that failed (timeout, HTTP or connection error, invalid answer): the decision then "
        "was the deterministic one.",
        [target(f'sum(rate(docktor_llm_calls_total{{{SVC},outcome!="ok"}}[{RATE}])) / '
                f"sum(rate(docktor_llm_calls_total{{{SVC}}}[{RATE}]))", "fallback rate", "A")],
        "percentunit",
    ), w=8)
    lay.add(timeseries(
        "LLM calls per minute, by outcome",
        "Calls that ended: ok, timeout, http_error, connection_error, cancelled, error.",
        [target(f"sum by (outcome) (rate(docktor_llm_calls_total{{{SVC}}}[{RATE}])) * 60", "{{outcome}}", "A")],
        "short", stack=True,
    ), w=8)
    lay.add(timeseries(
        "LLM tokens per minute",
        "Prompt and completion tokens, as the server reported them.",
        [target(f"sum by (type) (rate(docktor_llm_call_tokens_sum{{{SVC}}}[{RATE}])) * 60", "{{type}}", "A")],
        "short",
    ), w=12)
    lay.add(timeseries(
        "LLM circuit breaker",
        "1 while the breaker holds calls back after failures; failed calls in a row; calls in flight.",
        [
            target(f"docktor_llm_breaker_open{{{SVC}}}", "{{service}} breaker open", "A"),
            target(f"docktor_llm_consecutive_failures{{{SVC}}}", "{{service}} failures in a row", "B"),
            target(f"docktor_llm_calls_in_flight{{{SVC}}}", "{{service}} in flight", "C"),
        ],
        "short", decimals=0,
    ), w=12)

    lay.row("The daemon")
    lay.add(stat(
        "Decision log",
        "Whether the decision log takes lines. While it does not (a full disk), Docktor scales nothing and keeps "
        "deciding in memory.",
        [target("min(docktor_decision_log_writable)", "log", "A", instant=True)],
        mappings=[{"type": "value", "options": {"0": {"text": "NOT WRITABLE", "color": "red"},
                                                "1": {"text": "writable", "color": "green"}}}],
        thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
    ), w=4, h=6)
    lay.add(stat(
        "Scale actions refused",
        "Scale actions not taken because their intent could not be written to the log, in the time range.",
        [target("sum(increase(docktor_decision_log_refused_actions_total[$__range]))", "refused", "A", instant=True)],
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
    ), w=4, h=6)
    lay.add(stat(
        "Since the last decision",
        "Seconds since each service's last decision: more than a few check intervals means its loop is stuck.",
        [target(f"time() - docktor_last_decision_timestamp_seconds{{{SVC}}}", "{{service}}", "A", instant=True)],
        "s", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 60}, {"color": "red", "value": 300}],
    ), w=4, h=6)
    lay.add(timeseries(
        "Tick duration",
        "Time one tick takes (observe, decide, act, record), 90th percentile per service.",
        [target(f"histogram_quantile(0.9, sum by (service, le) (rate(docktor_tick_duration_seconds_bucket{{{SVC}}}[{RATE}])))",
                "{{service}} p90", "A")],
        "s",
    ), w=6, h=6)
    lay.add(timeseries(
        "Daemon CPU and memory",
        "The Docktor process (of the targets exporting docktor_info): CPU in cores, resident memory on the right.",
        [
            target(f"rate(process_cpu_seconds_total[{RATE}]) and on(job, instance) docktor_info", "{{instance}} CPU", "A"),
            target("process_resident_memory_bytes and on(job, instance) docktor_info", "{{instance}} RSS", "B"),
        ],
        "short", overrides=[by_name(".* RSS", right_axis("bytes"))],
    ), w=6, h=6)
    return lay.panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": "docktor",
        "title": "Docktor",
        "description": "Docktor, the queue-worker autoscaler: replicas vs load, backlog and waits, decisions and "
                       "their reasons, guardrails, the LLM advisor, the decision log. Metrics: docs/operations.md.",
        "tags": ["docktor", "autoscaling"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "version": 1,
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            {"name": "service", "label": "Service", "type": "query", "datasource": DS,
             "definition": "label_values(docktor_replicas_max, service)",
             "query": {"query": "label_values(docktor_replicas_max, service)", "refId": "service"},
             "includeAll": True, "multi": True, "allValue": ".+", "current": {}, "hide": 0, "refresh": 2,
             "regex": "", "sort": 1, "options": []},
        ]},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
