"""``docktor bench --from-log`` and ``--from-prometheus``: the user's own load, replayed through
the config that ran and the alternatives (agent/sim/from_log.py, from_prometheus.py, replay_log.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docktor.agent.cli.score_table import print_rows
from docktor.agent.problems import Problem, UsageError


def replay_load(path: Path | None, prom: tuple[str, str | None, str, float | None] | None, service: str | None, config: Path,
            policies: str | None, cv: float, seed: int, as_json: bool, markdown: bool, since: str | None = None) -> None:
    """``bench --from-log`` / ``--from-prometheus``: rebuild the load, replay it through the config
    that ran and the alternatives, say how it was rebuilt and what it cannot know."""
    from docktor.agent.cli.common import load
    from docktor.agent.sim.bench import parse_policies
    from docktor.agent.sim.replay_log import FROM_LOG_POLICIES, replay, summary_lines

    names = parse_policies(policies) if policies else list(FROM_LOG_POLICIES)
    if cv < 0:
        raise UsageError([Problem("--cv", "must be >= 0")])
    if path is not None:
        from docktor.agent.sim.from_log import pick_service, read_decisions, rebuild

        records = _since(read_decisions(path), since, path)
        name = pick_service(records, service)
        svc = _service(load(config), config, name)
        rebuilt = rebuild(records, name, svc, cv=cv, seed=seed)
        source = "the load the daemon logged"
    else:
        assert prom is not None
        rebuilt = _from_prometheus(*prom, service=service, config=config, cv=cv, seed=seed)
        name, svc = rebuilt.service, _service(load(config), config, rebuilt.service)
        source = "the arrival rate Prometheus recorded"
    result = replay(rebuilt, svc, names)
    if as_json:
        for r in result.rows:
            print(json.dumps(r))
        print(json.dumps({"rebuilt": {"service": name, "how": rebuilt.how, "cannot_know": rebuilt.unknown,
                                      "best": result.best, "summary": summary_lines(result)}}))
        return
    print(f"service {name}: {source}, replayed through your config and the alternatives")
    print("rebuilt from the log:")
    print("\n".join(f"  {line}" for line in rebuilt.how))
    print("what it cannot know:")
    print("\n".join(f"  {line}" for line in rebuilt.unknown))
    print()
    print_rows(result.rows, markdown)
    print()
    print("\n".join(summary_lines(result)))


def _since(records: list[dict[str, Any]], since: str | None, path: Path) -> list[dict[str, Any]]:
    """The records from ``--since`` on (``2h``: the last two hours until now; an RFC 3339 time), all without it."""
    if since is None:
        return records
    import time

    from docktor.agent.cli.daemon import parse_since
    from docktor.agent.timestamps import parse_rfc3339, rfc3339

    start = parse_since(since, time.time())
    assert start is not None
    kept = [r for r in records if _when(r, parse_rfc3339) >= start]
    if not kept:
        first, last = records[0].get("ts"), records[-1].get("ts")
        raise UsageError([Problem("--since", f"no decision in {path} since {rfc3339(start)} (it holds {first} to {last})")])
    return kept


def _when(record: dict[str, Any], parse: Any) -> float:
    try:
        return float(parse(str(record.get("ts"))))
    except ValueError:
        return float("-inf")  # a record without a readable time is before any window


def _service(cfg: Any, config: Path, name: str) -> Any:
    svc = next((s for s in cfg.services if s.name == name), None)
    if svc is None:
        have = ", ".join(s.name for s in cfg.services)
        raise UsageError([Problem("--config", f"{config} has no service {name!r} (it has: {have}): give the config that ran")])
    return svc


def _from_prometheus(url: str, query: str | None, since: str, service_ms: float | None, *, service: str | None, config: Path,
                     cv: float, seed: int) -> Any:
    import time

    from docktor.agent.cli.common import load
    from docktor.agent.cli.daemon import parse_since
    from docktor.agent.sim.from_prometheus import access_for, fetch_series, rebuild_from_series, step_for

    if not query:
        raise UsageError([Problem("--query", "--from-prometheus needs the PromQL of the arrival rate, e.g. sum(rate(jobs_total[1m]))")])
    if not url.startswith(("http://", "https://")):
        raise UsageError([Problem("--from-prometheus", f"expected an http:// or https:// URL, got {url!r}")])
    cfg = load(config)
    names = [s.name for s in cfg.services]
    if service is None and len(names) > 1:
        raise UsageError([Problem("--service", f"{config} has {len(names)} services: name one ({', '.join(names)})")])
    svc = _service(cfg, config, service or names[0])
    if service_ms is None and svc.processing_time is None:
        rebuild_from_series([], 1.0, svc, query, service_s=None)  # says: give --service-ms or processing_time
    end = time.time()
    start = parse_since(since, end)
    assert start is not None
    if not end - start >= 2:
        raise UsageError([Problem("--since", f"{since!r}: the window must be at least 2 s and in the past")])
    step = step_for(end - start, svc.check_interval)
    access, how = access_for(url, cfg, svc.name)
    points = fetch_series(url, query, start, end, step, access)
    rebuilt = rebuild_from_series(points, step, svc, query, service_s=None if service_ms is None else service_ms / 1000,
                                  cv=cv, seed=seed)
    rebuilt.how.append(how)
    return rebuilt
