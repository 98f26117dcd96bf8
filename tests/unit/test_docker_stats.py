"""The CPU/memory arithmetic behind the compose executor's cpu.* and mem.* metrics."""

from __future__ import annotations

import pytest

from docktor.tools.executors.docker_stats import MIB, Sample, aggregate, cpu_percent, memory_bytes, sample


def reading(total: int, system: int, cpus: int = 2, usage: int = 100 * MIB, inactive: int = 20 * MIB) -> dict:
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": cpus},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}},  # what a one-shot reading carries
        "memory_stats": {"usage": usage, "stats": {"inactive_file": inactive}},
    }


def test_cpu_percent_is_relative_to_one_core() -> None:
    before, after = reading(1_000, 10_000), reading(2_000, 12_000, cpus=2)
    # the container used 1000 of 2000 system ticks on a 2-CPU host: one full core
    assert cpu_percent(after["cpu_stats"], before["cpu_stats"]) == pytest.approx(100.0)


def test_one_shot_reading_alone_has_no_cpu_figure() -> None:
    s = sample(reading(2_000, 12_000), memory_limit=None)
    assert s.cpu_pct is None
    assert s.mem_bytes == 80 * MIB  # usage minus reclaimable page cache
    assert s.mem_limit is None


def test_previous_reading_supplies_the_earlier_sample() -> None:
    prev = reading(1_000, 10_000)["cpu_stats"]
    s = sample(reading(1_500, 12_000), memory_limit=200 * MIB, previous_cpu=prev)
    assert s.cpu_pct == pytest.approx(50.0)
    assert s.mem_limit == 200 * MIB


def test_cgroup_v1_memory_key() -> None:
    stats = {"memory_stats": {"usage": 50 * MIB, "stats": {"total_inactive_file": 10 * MIB}}}
    assert memory_bytes(stats) == 40 * MIB
    assert memory_bytes({"memory_stats": {}}) is None


def test_aggregate_cpu_over_replicas_with_two_readings_memory_needs_all() -> None:
    out = aggregate([Sample(40.0, 100 * MIB, 200 * MIB), Sample(None, 50 * MIB, 200 * MIB), Sample(80.0, 30 * MIB, 200 * MIB)])
    assert out["cpu.avg"] == pytest.approx(60.0)
    assert out["cpu.max"] == pytest.approx(80.0)
    assert out["mem.avg_mb"] == pytest.approx(60.0)
    assert out["mem.max_mb"] == pytest.approx(100.0)
    assert out["mem.avg_pct"] == pytest.approx(30.0)

    missing_memory = aggregate([Sample(10.0, None, None), Sample(20.0, 5 * MIB, None)])
    assert set(missing_memory) == {"cpu.avg", "cpu.max"}  # never an average over whoever answered
    no_limit = aggregate([Sample(None, 5 * MIB, None), Sample(None, 7 * MIB, 100 * MIB)])
    assert set(no_limit) == {"mem.avg_mb", "mem.max_mb"}
    assert aggregate([]) == {}
