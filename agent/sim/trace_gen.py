"""Held-out load traces for ``docktor bench``: shapes the sizing policy was not tuned on.

``python -m docktor.agent.sim.trace_gen DIR [--seed N]`` writes one ``t,rate`` CSV per shape into DIR. The
shapes are drawn with one seeded generator, so a seed gives the same files every time; a new
seed gives new traces of the same families (different periods, heights, walk paths). Counts per
second are Poisson around the shape's rate, like the public traces shipped in ``docktor/agent/sim/traces``.

The point is to check that a change to the policy generalises: tune on the public traces, then
measure on these (and on other seeds) before believing a gain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from docktor.agent.sim.trace_file import Trace

Shape = Callable[[np.random.Generator], tuple[np.ndarray, str]]


def _spikes(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = 1800
    base = rng.uniform(60, 150)
    rate = np.full(n, base)
    t = int(rng.integers(60, 180))
    while t < n - 30:
        width = int(rng.integers(2, 8))
        rate[t : t + width] += rng.uniform(5, 20) * base
        t += int(rng.integers(90, 400))
    return rate, f"{base:.0f} msg/s with short random spikes (2-7 s, 5-20x)"


def _sawtooth(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = 2400
    period = int(rng.integers(200, 500))
    lo, hi = rng.uniform(20, 80), rng.uniform(600, 1200)
    phase = (np.arange(n) % period) / period
    return lo + (hi - lo) * phase, f"sawtooth {lo:.0f}->{hi:.0f} msg/s, period {period} s, sudden drop"


def _random_walk(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = 2400
    steps = rng.normal(0, 12, n)
    walk = np.cumsum(steps)
    rate = np.clip(300 + walk, 20, 1500)
    return rate, "random walk from 300 msg/s, sd 12 msg/s per second, clipped to 20-1500"


def _flash_crowd(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = 2400
    base = rng.uniform(50, 120)
    peak = rng.uniform(900, 1600)
    start = int(rng.integers(400, 900))
    rise = int(rng.integers(5, 40))
    decay = rng.uniform(120, 400)
    t = np.arange(n, dtype=float)
    rate = np.full(n, base)
    up = (t >= start) & (t < start + rise)
    rate[up] = base + (peak - base) * (t[up] - start) / rise
    after = t >= start + rise
    rate[after] = base + (peak - base) * np.exp(-(t[after] - start - rise) / decay)
    return rate, f"flash crowd {base:.0f}->{peak:.0f} msg/s at {start} s (rise {rise} s), decay tau {decay:.0f} s"


def _bursts(rng: np.random.Generator, name: str) -> tuple[np.ndarray, str]:
    n = 2400
    period = int(rng.integers(30, 240))
    width = int(rng.integers(3, max(4, period // 3)))
    base = rng.uniform(40, 200)
    height = rng.uniform(3, 12) * base
    rate = np.full(n, base)
    offset = int(rng.integers(0, period))
    for s in range(offset, n, period):
        rate[s : s + width] = height
    return rate, f"{name}: {base:.0f} msg/s, bursts of {height:.0f} msg/s for {width} s every {period} s"


def _noisy_diurnal(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = 3600
    period = rng.uniform(1500, 3600)
    lo, hi = rng.uniform(30, 100), rng.uniform(500, 1000)
    t = np.arange(n, dtype=float)
    shape = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
    # slow multiplicative noise: an AR(1) around 1 with a one-minute memory
    noise = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = acc * np.exp(-1 / 60) + rng.normal(0, 0.04)
        noise[i] = acc
    return shape * np.clip(1 + noise, 0.3, 2.0), f"diurnal {lo:.0f}-{hi:.0f} msg/s, period {period:.0f} s, AR(1) noise"


def _on_off(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = 2400
    rate = np.zeros(n)
    t = 0
    level = rng.uniform(300, 800)
    while t < n:
        on = int(rng.integers(60, 300))
        off = int(rng.integers(30, 240))
        rate[t : t + on] = level * rng.uniform(0.7, 1.3)
        t += on + off
    return rate, f"on/off batches around {level:.0f} msg/s, idle gaps of 30-240 s"


SHAPES: dict[str, Shape] = {
    "spikes": _spikes,
    "sawtooth": _sawtooth,
    "random-walk": _random_walk,
    "flash-crowd": _flash_crowd,
    "bursts-a": lambda rng: _bursts(rng, "bursts-a"),
    "bursts-b": lambda rng: _bursts(rng, "bursts-b"),
    "noisy-diurnal": _noisy_diurnal,
    "on-off": _on_off,
}


def generate(seed: int) -> dict[str, tuple[np.ndarray, str]]:
    """Per shape: arrivals per second (Poisson around the shape) and a one-line description."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[np.ndarray, str]] = {}
    for name, shape in SHAPES.items():
        rate, what = shape(rng)
        out[name] = (rng.poisson(np.maximum(rate, 0.0)).astype(np.int64), what)
    return out


def held_out_traces(seed: int) -> list[Trace]:
    """The seed's traces in memory, named ``shape@seed`` (what ``docktor bench --held-out`` runs)."""
    from docktor.agent.sim.trace_file import Trace

    return [Trace(f"{name}@{seed}", counts) for name, (counts, _) in generate(seed).items()]


def write(directory: Path, seed: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (counts, what) in generate(seed).items():
        path = directory / f"{name}.csv"
        lines = [f"# {what} (docktor.agent.sim.trace_gen, seed {seed})", "t,rate"]
        lines += [f"{t},{int(c)}" for t, c in enumerate(counts)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docktor.agent.sim.trace_gen", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for path in write(args.directory, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
