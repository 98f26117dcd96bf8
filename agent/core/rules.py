"""Declarative rules: ``scale_up_when`` fires when ANY rule matches, ``scale_down_when`` when ALL do."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from docktor.agent.config.model import Rule, Rules

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    value: float | None  # None: the metric was missing

    @property
    def matched(self) -> bool:
        return self.value is not None and _OPS[self.rule.op](self.value, self.rule.value)

    def text(self) -> str:
        """Readable, e.g. ``queue.backlog 1500 > 500``."""
        shown = "missing" if self.value is None else f"{self.value:.4g}"
        return f"{self.rule.metric} {shown} {self.rule.op} {self.rule.value:g}"


@dataclass(frozen=True)
class Evaluation:
    up: tuple[RuleResult, ...]
    down: tuple[RuleResult, ...]

    @property
    def missing(self) -> list[str]:
        return sorted({r.rule.metric for r in self.up + self.down if r.value is None})

    @property
    def up_fired(self) -> bool:
        return any(r.matched for r in self.up)

    @property
    def down_fired(self) -> bool:
        # An empty list never fires: no rule, no scale-in. A missing metric fails its rule.
        return bool(self.down) and all(r.matched for r in self.down)

    @property
    def matched_rules(self) -> list[str]:
        """The rules that made a direction fire, as readable text."""
        out = [r.text() for r in self.up if r.matched]
        if self.down_fired:
            out += [r.text() for r in self.down]
        return out


def evaluate(rules: Rules, observations: Mapping[str, float]) -> Evaluation:
    return Evaluation(
        up=_results(rules.scale_up_when, observations),
        down=_results(rules.scale_down_when, observations),
    )


def _results(rules: Sequence[Rule], observations: Mapping[str, float]) -> tuple[RuleResult, ...]:
    return tuple(RuleResult(rule, observations.get(rule.metric)) for rule in rules)
