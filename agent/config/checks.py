"""The offline checks of a loaded config: what each plugin can tell without a network call, and
the environment variables the settings name.

Three kinds of finding, as ``validate`` and ``daemon start`` treat them:

* a *refusal*: an executor's backend proved the settings can never work (a global Swarm service;
  the plugin raised :class:`~docktor.tools.sdk.ExecutorError`). ``validate`` and ``daemon start``
  both refuse the config.
* a *problem*: a fact of this machine says it will fail — a file the settings name does not
  exist, a program is not installed (the plugin's :class:`~docktor.tools.sdk.Unworkable` lines),
  a ``*_env`` setting names a variable that is not set. ``validate`` exits 2; ``daemon start``
  starts, and the decision log says what fails at each tick.
* a *warning*: what may be right elsewhere (no Compose CLI on this machine).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from docktor.agent.config.model import DocktorConfig
from docktor.agent.config.secrets import secret_env_names
from docktor.agent.problems import Problem
from docktor.tools.registry import executor_plugin, source_plugin
from docktor.tools.sdk import Context, ExecutorError, Plugin, Unworkable, one_line


@dataclass
class Findings:
    refusals: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def offline_checks(config: DocktorConfig, env: Mapping[str, str] | None = None) -> Findings:
    """Every plugin's ``check`` and every ``*_env`` setting of every service, in the config's order."""
    assert config.state_dir is not None  # the loader always resolves it
    env = os.environ if env is None else env
    secrets = secret_env_names(config)
    found = Findings()
    for svc in config.services:
        context = Context(service=svc.name, base_dir=config.base_dir, state_dir=config.state_dir, secret_env=secrets)
        plugins: list[tuple[str, str, type[Plugin[Any]], Any]] = []
        if svc.executor is not None:
            plugins.append(("executor", svc.executor.where or svc.name, executor_plugin(svc.executor.kind), svc.executor.settings))
        for spec in svc.sources:
            plugins.append((f"source {spec.name}", spec.where or svc.name, source_plugin(spec.kind), spec.settings))
        for who, where, plugin, settings in plugins:
            try:
                lines = plugin.check(settings, context)
            except ExecutorError as e:
                found.refusals.append(Problem(where, str(e)))
                continue
            except Exception as e:  # a plugin's bug: said, and the other checks go on
                found.warnings.append(f"{svc.name}: {who}: its check failed: {one_line(e)}")
                continue
            for line in lines:
                if isinstance(line, Unworkable):
                    found.problems.append(Problem(where, str(line)))
                else:
                    found.warnings.append(f"{svc.name}: {who}: {line}")
            found.problems += unset_variables(where, settings, env)
    return found


def unset_variables(where: str, settings: Any, env: Mapping[str, str]) -> list[Problem]:
    """A ``*_env`` setting (``password_env: RABBITMQ_PASSWORD``) whose variable is not set: the
    plugin would fail at its first read."""
    problems = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if name.endswith("_env") and isinstance(value, str) and value and value not in env:
            problems.append(Problem(f"{where}.{name}", f"environment variable {value} is not set"))
    return problems
