"""Turn Docker engine stats (``GET /containers/{id}/stats?stream=false``) into Docktor metrics.

Pure functions, so the arithmetic is testable without an engine. The formulas are the ones the
``docker stats`` CLI uses: CPU percent from the delta between two ``cpu_stats`` readings (100 =
one core), memory as usage minus the page cache the kernel can drop (``inactive_file``).

The executor asks for one-shot readings (the engine may then skip taking a second sample) and
supplies its previous reading as the earlier sample when the engine's ``precpu_stats`` is empty,
so CPU figures are averages between two of its refreshes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One container's reading. ``None`` marks what the engine did not report."""

    cpu_pct: float | None
    mem_bytes: float | None
    mem_limit: float | None  # only when the container has a memory limit of its own


def cpu_percent(cpu: Mapping[str, Any], pre: Mapping[str, Any] | None) -> float | None:
    """CPU use between an earlier reading ``pre`` and ``cpu`` (both ``cpu_stats``), percent of one core."""
    if not pre:
        return None
    try:
        total = cpu["cpu_usage"]["total_usage"]
        pre_total = pre["cpu_usage"]["total_usage"]
        system, pre_system = cpu["system_cpu_usage"], pre["system_cpu_usage"]
    except (KeyError, TypeError):
        # one-shot readings have an empty precpu_stats: no figure, not zero
        return None
    cpus = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or ()) or 1
    cpu_delta, system_delta = total - pre_total, system - pre_system
    if system_delta <= 0 or cpu_delta < 0:
        return None
    return float(cpu_delta / system_delta * cpus * 100.0)


def memory_bytes(stats: Mapping[str, Any]) -> float | None:
    """Resident memory: usage minus reclaimable page cache (cgroup v2 and v1 key names)."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    detail = mem.get("stats") or {}
    for key in ("inactive_file", "total_inactive_file"):
        if key in detail and detail[key] < usage:
            return float(usage - detail[key])
    return float(usage)


def sample(stats: Mapping[str, Any], memory_limit: int | None, previous_cpu: Mapping[str, Any] | None = None) -> Sample:
    """One container's figures from an engine reading.

    ``previous_cpu``: the container's ``cpu_stats`` from an earlier reading, used when the
    engine's own ``precpu_stats`` is empty (one-shot readings). ``memory_limit``: the container's
    ``HostConfig.Memory`` (0/None = no limit); the engine reports the host's memory as ``limit``
    when none is set, so a percent figure is only meaningful with the container's own limit.
    """
    cpu = stats.get("cpu_stats") or {}
    pre = stats.get("precpu_stats") or {}
    if "system_cpu_usage" not in pre:
        pre = previous_cpu or {}
    return Sample(cpu_percent(cpu, pre), memory_bytes(stats), float(memory_limit) if memory_limit else None)


def aggregate(samples: Iterable[Sample]) -> dict[str, float]:
    """``cpu.avg``/``cpu.max``/``mem.avg_mb``/``mem.max_mb``/``mem.avg_pct`` over containers.

    Memory figures need every container's reading. CPU figures are over the containers that have
    two readings: a replica seen for the first time has none yet (it has just started, so leaving
    it out does not hide a hot service); absent when no container has one.
    """
    items = list(samples)
    out: dict[str, float] = {}
    if not items:
        return out
    cpus = [s.cpu_pct for s in items if s.cpu_pct is not None]
    if cpus:
        out["cpu.avg"] = sum(cpus) / len(cpus)
        out["cpu.max"] = max(cpus)
    mems = [s.mem_bytes for s in items if s.mem_bytes is not None]
    if len(mems) == len(items):
        out["mem.avg_mb"] = sum(mems) / len(mems) / MIB
        out["mem.max_mb"] = max(mems) / MIB
        limits = [s.mem_limit for s in items if s.mem_limit]
        if len(limits) == len(items):
            pcts = [m / limit * 100.0 for m, limit in zip(mems, limits, strict=True)]
            out["mem.avg_pct"] = sum(pcts) / len(pcts)
    return out
