"""``docktor validate --connect``: every source read once and every executor asked its status.

What only the systems can tell (a stream that does not exist, a wrong password, the AMQP port
given for the management API) shows here as one line per problem, before a daemon ever starts.
Everything runs at once and each call is bounded: a source gets its own ``timeout`` capped at the
probe's, so its own error (with its cause) arrives before the bound; the bound itself only
catches a plugin that ignores its timeout. Nothing is scaled and nothing is written: the local
executor is not asked at all (asking it would adopt or stop replicas; its program was checked
offline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from docktor.agent.config.model import DocktorConfig, ExecutorSpec, ServiceConfig, SourceSpec
from docktor.agent.config.secrets import secret_env_names
from docktor.agent.problems import Problem
from docktor.agent.redact import redact
from docktor.tools.registry import executor_plugin, source_plugin
from docktor.tools.sdk import Context, ReplicaStatus, admit, one_line

#: what ``validate --connect`` waits for one source or executor, by default
DEFAULT_TIMEOUT_S = 5.0
#: a plugin's close() gets this long; a probe never waits on a hung close
CLOSE_BOUND_S = 2.0


@dataclass(frozen=True)
class Answer:
    """One source or executor asked: what it said (``said``) or why not (``problem``)."""

    service: str
    who: str  # "queue", "source lag", "executor"
    said: str | None = None
    problem: Problem | None = None


async def probe(config: DocktorConfig, timeout: float = DEFAULT_TIMEOUT_S) -> list[Answer]:
    """Every source and executor of every service, all at once; answers in the config's order."""
    assert config.state_dir is not None  # the loader always resolves it
    secrets = secret_env_names(config)
    calls = []
    for svc in config.services:
        context = Context(service=svc.name, base_dir=config.base_dir, state_dir=config.state_dir, secret_env=secrets)
        calls += [_source(svc, spec, context, timeout) for spec in svc.sources]
        if svc.executor is not None:
            calls.append(_executor(svc, svc.executor, context, timeout))
    return list(await asyncio.gather(*calls))


async def _source(svc: ServiceConfig, spec: SourceSpec, context: Context, timeout: float) -> Answer:
    who = "queue" if spec.primary else f"source {spec.name}"
    plugin = source_plugin(spec.kind)
    where = spec.where or svc.name

    def problem(text: str) -> Answer:
        return Answer(svc.name, who, problem=Problem(where, redact(f"{plugin.describe(spec.settings)}: {text}")))

    try:
        source = plugin(_capped(spec.settings, timeout), context)
    except Exception as e:
        return problem(one_line(e))
    try:
        reading = await asyncio.wait_for(source.read(), timeout + 1.0)
    except TimeoutError:
        return problem(f"no answer within {timeout + 1.0:g} s")
    except Exception as e:
        return problem(one_line(e))
    finally:
        await _close(source)
    if not isinstance(reading, Mapping):
        return problem(f"read() returned {type(reading).__name__}, not a mapping of metrics")
    kept, refused = admit(reading, plugin.metrics_for(spec.settings))
    # It answered: a figure it does not have yet (statistics not collected) is missing, not an error.
    shown = ", ".join(f"{spec.metric_name(k)}={v:g}" for k, v in sorted(kept.items())) or "answered, no figures yet"
    if refused:
        shown += "; treated as missing: " + "; ".join(f"{k}: {v}" for k, v in refused.items())
    return Answer(svc.name, who, said=redact(shown))


async def _executor(svc: ServiceConfig, spec: ExecutorSpec, context: Context, timeout: float) -> Answer:
    plugin = executor_plugin(spec.kind)
    where = spec.where or svc.name
    if getattr(plugin, "in_process", False):
        return Answer(svc.name, "executor", said=f"{spec.kind}: runs nothing until the daemon starts (its command was checked)")
    try:
        executor = plugin(spec.settings, context)
    except Exception as e:
        return Answer(svc.name, "executor", problem=Problem(where, redact(one_line(e))))
    try:
        status = await asyncio.wait_for(executor.status(), timeout + 1.0)
    except TimeoutError:
        return Answer(svc.name, "executor", problem=Problem(where, f"{spec.kind}: no status within {timeout + 1.0:g} s"))
    except Exception as e:
        return Answer(svc.name, "executor", problem=Problem(where, redact(f"{spec.kind}: {one_line(e)}")))
    finally:
        await _close(executor)
    if not isinstance(status, ReplicaStatus):
        return Answer(svc.name, "executor", problem=Problem(where, f"{spec.kind}: status() returned {type(status).__name__}"))
    said = f"{plugin.describe(spec.settings)}: {status.running}/{status.desired} replicas running"
    if not status.healthy or status.failed:
        said += f" ({status.detail or 'unhealthy'})"
    return Answer(svc.name, "executor", said=redact(said))


def _capped(settings: Any, timeout: float) -> Any:
    """The settings with their own ``timeout`` no longer than the probe's (their retries fit in it)."""
    own = getattr(settings, "timeout", None)
    if isinstance(own, int | float) and not isinstance(own, bool) and own > timeout:
        return settings.model_copy(update={"timeout": timeout})
    return settings


async def _close(plugin: Any) -> None:
    try:
        await asyncio.wait_for(plugin.close(), CLOSE_BOUND_S)
    except Exception:  # a probe's answer stands whatever closing its client says
        pass
