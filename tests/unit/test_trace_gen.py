"""The held-out trace generator: seeded, readable by the simulator, one file per shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from docktor.agent.sim.trace_file import load_traces
from docktor.agent.sim.trace_gen import SHAPES, generate, main, write


def test_same_seed_same_files_other_seed_other_traces(tmp_path: Path) -> None:
    a = write(tmp_path / "a", seed=3)
    b = write(tmp_path / "b", seed=3)
    c = write(tmp_path / "c", seed=4)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert any(p.read_bytes() != q.read_bytes() for p, q in zip(a, c))


def test_every_shape_is_a_valid_trace_the_bench_can_load(tmp_path: Path) -> None:
    assert main([str(tmp_path), "--seed", "11"]) == 0
    traces = load_traces(tmp_path)
    assert sorted(t.name for t in traces) == sorted(SHAPES)
    for t in traces:
        assert t.duration >= 1800
        assert (t.rates >= 0).all()
        # a shape, not a flat line: the busiest 10 s well above the quietest
        windows = t.rates[: len(t.rates) // 10 * 10].reshape(-1, 10).sum(axis=1)
        assert windows.max() > 1.5 * max(1, windows.min()), t.name


def test_counts_follow_the_shape_descriptions() -> None:
    traces = generate(5)
    on_off, _ = traces["on-off"]
    assert (on_off == 0).sum() >= 30  # idle gaps exist
    bursts, what = traces["bursts-a"]
    assert "every" in what and np.percentile(bursts, 99) > 2.5 * np.median(bursts)
