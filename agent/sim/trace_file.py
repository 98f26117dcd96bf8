"""Load traces: per-second arrival rates (``t,rate`` CSV, ``#`` comments), read and checked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docktor.agent.problems import Problem, UsageError


@dataclass(frozen=True)
class Trace:
    name: str
    rates: np.ndarray  # messages arriving in second t, t = 0 .. len-1

    @property
    def duration(self) -> float:
        return float(len(self.rates))

    @property
    def messages(self) -> int:
        return int(self.rates.sum())


def parse_trace(text: str, name: str, where: str) -> Trace:
    """``t,rate`` CSV; ``#`` lines are comments; seconds may be sparse (missing seconds are 0)."""
    rows: list[tuple[int, int]] = []
    header_seen = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if not header_seen and parts[:2] == ["t", "rate"]:
            header_seen = True
            continue
        if len(parts) != 2:
            raise UsageError([Problem(f"{where}:{lineno}", f"expected 't,rate', got {line!r}")])
        try:
            t, rate = float(parts[0]), float(parts[1])
        except ValueError:
            raise UsageError([Problem(f"{where}:{lineno}", f"not numbers: {line!r}")]) from None
        if not (math.isfinite(t) and math.isfinite(rate)) or t < 0 or rate < 0 or t != int(t):
            raise UsageError([Problem(f"{where}:{lineno}", f"t must be a whole second >= 0 and rate >= 0, got {line!r}")])
        if rows and int(t) <= rows[-1][0]:
            raise UsageError([Problem(f"{where}:{lineno}", f"t must increase, got {int(t)} after {rows[-1][0]}")])
        rows.append((int(t), int(round(rate))))
    if not rows:
        raise UsageError([Problem(where, "no data rows (expected a 't,rate' header and one line per second)")])
    rates = np.zeros(rows[-1][0] + 1, dtype=np.int64)
    for t, r in rows:
        rates[t] = r
    return Trace(name, rates)


def load_trace(path: Path) -> Trace:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError([Problem(str(path), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError([Problem(str(path), f"cannot read: {e}")]) from None
    return parse_trace(text, path.stem, str(path))


def load_traces(directory: Path, names: list[str] | None = None) -> list[Trace]:
    if not directory.is_dir():
        raise UsageError([Problem("--traces", f"{directory}: not a directory")])
    files = sorted(directory.glob("*.csv"))
    if names:
        by_stem = {f.stem: f for f in files}
        unknown = [n for n in names if n not in by_stem]
        if unknown:
            raise UsageError([Problem("--trace", f"no trace {unknown[0]!r} in {directory} (have: {', '.join(sorted(by_stem))})")])
        files = [by_stem[n] for n in names]
    if not files:
        raise UsageError([Problem("--traces", f"{directory}: no *.csv traces")])
    return [load_trace(f) for f in files]
