"""A reload: the running service loops reconciled with a new config.

Unchanged services go on untouched; changed ones restart (keeping the plugins whose settings did
not change, and whatever of their saved state still means something); new ones start; removed
ones stop. A service is "changed" when its :func:`fingerprint` is, the one definition of what
makes a service (the exporter is told the same set through the supervisor's ``on_reload`` hook).
The new loops are built and their targets claimed before anything stops, so a refused reload
changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docktor.agent.config.model import DocktorConfig, ServiceConfig
from docktor.agent.runtime.commands import ControlRefused

if TYPE_CHECKING:
    from docktor.agent.runtime.service_loop import ServiceLoop
    from docktor.agent.runtime.supervisor import Supervisor

log = logging.getLogger("docktor")

#: the ``llm:`` keys that say where and how the model is reached: a reload that changes one starts
#: a new advisor, and every service again (their breakers and advice belong to the old endpoint).
#: The others (the allowance, when to ask, the prompt's budget) are read at every decision: a
#: reload changes them in place.
LLM_ENDPOINT_KEYS = ("from_", "provider", "base_url", "model", "endpoint_var", "model_var", "api_key_env", "timeout")


def fingerprint(svc: ServiceConfig) -> tuple[Any, ...]:
    """Everything that defines a service (its position in the file does not)."""
    ex = svc.executor
    return (
        svc.model_dump_json(),
        None if ex is None else (ex.kind, ex.settings.model_dump_json()),
        tuple((s.name, s.kind, s.settings.model_dump_json(), s.primary, s.on_missing) for s in svc.sources),
    )


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from ``old`` to ``new`` does to each service."""

    changed: list[ServiceConfig]  # restarted (their definition, or the LLM endpoint, changed)
    added: list[ServiceConfig]
    removed: list[str]
    unchanged: list[str]
    llm_changed: bool  # a new advisor: the endpoint or model changed
    retuned: list[str]  # llm: keys changed in place

    @property
    def restarted(self) -> set[str]:
        """The services whose loop (and metrics series) start afresh."""
        return {s.name for s in self.changed + self.added} | set(self.removed)


def plan_reload(old: DocktorConfig, new: DocktorConfig) -> ReloadPlan:
    before = {s.name: fingerprint(s) for s in old.services}
    llm_changed = any(getattr(old.llm, k) != getattr(new.llm, k) for k in LLM_ENDPOINT_KEYS)
    retuned = [] if llm_changed else [k for k in type(new.llm).model_fields if getattr(old.llm, k) != getattr(new.llm, k)]
    changed = [s for s in new.services if s.name in before and (llm_changed or fingerprint(s) != before[s.name])]
    return ReloadPlan(
        changed=changed,
        added=[s for s in new.services if s.name not in before],
        removed=[n for n in before if n not in {s.name for s in new.services}],
        unchanged=[s.name for s in new.services if s.name in before and s not in changed],
        llm_changed=llm_changed,
        retuned=retuned,
    )


async def reconcile(daemon: Supervisor, config: DocktorConfig) -> dict[str, Any]:
    """Run ``config`` from now on; returns the report ``daemon reload`` prints. ``config`` is
    already validated: this refuses only what cannot change while running (``state_dir``) and a
    target another process holds."""
    from docktor.agent.runtime.restore import restore_loops

    if config.state_dir != daemon.config.state_dir:
        raise ControlRefused("invalid_config", f"state_dir: cannot change while the daemon runs (it is "
                                               f"{daemon.config.state_dir}); stop and start the daemon to move it")
    old = daemon.config
    plan = plan_reload(old, config)
    loops = daemon.loops

    # Build first, claim the new targets, and only then stop anything: a refused reload changes nothing.
    fresh = {s.name: daemon.build_loop(s, reuse=loops.get(s.name), config=config) for s in plan.changed + plan.added}
    for name, new in fresh.items():
        was = loops.get(name)
        if was is not None and was.target_lock is not None and was.target() == new.target():
            new.target_lock = was.target_lock  # the same target: this process keeps holding it
    try:
        daemon.claim(list(fresh.values()), "daemon")
    except Exception as e:
        for name, new in fresh.items():
            was = loops.get(name)
            await asyncio.gather(*new.close_plugins(keep=was), return_exceptions=True)
            new.release_target(unless=None if was is None else was.target_lock)
        raise ControlRefused("invalid_config", str(e)) from None

    stopping = [loops[n] for n in plan.removed] + [loops[s.name] for s in plan.changed]
    await asyncio.gather(*(loop.halt() for loop in stopping))
    for loop in stopping:
        await loop.save_state(force=True)
    daemon.config = config
    daemon.mode = daemon.mode_override or config.mode
    daemon.log.max_bytes, daemon.log.backups = config.log.max_bytes, config.log.backups
    if plan.llm_changed:
        await daemon.close_advisor()
        daemon.open_advisor()
    elif plan.retuned and daemon.advisor is not None:
        daemon.advisor.retune(config.llm)
    closers: list[Any] = []
    for name in plan.removed:
        gone = loops.pop(name)
        closers.extend(gone.close_plugins())
        gone.release_target()
    for s in plan.changed:
        was, new = loops[s.name], fresh[s.name]
        closers.extend(was.close_plugins(keep=new))
        was.release_target(unless=new.target_lock)
        loops[s.name] = new
    for s in plan.added:
        loops[s.name] = fresh[s.name]
    for res in await asyncio.gather(*closers, return_exceptions=True):
        if isinstance(res, BaseException):
            log.warning("error while closing: %s", res)
    restarted: list[ServiceLoop] = [loops[s.name] for s in plan.changed + plan.added]
    if daemon.state_mode != "off":
        await restore_loops(daemon, restarted)
    if daemon.running:
        for loop in restarted:
            loop.start()
    for hook in daemon.on_reload:
        hook(config, plan.restarted)
    report = {
        "changed": {s.name: what_changed(old.service(s.name), s) or "llm" for s in plan.changed},
        "added": [s.name for s in plan.added], "removed": plan.removed, "unchanged": plan.unchanged, "mode": daemon.mode,
        "llm_retuned": plan.retuned,
        "restored": {loop.name: loop.restored.as_dict() for loop in restarted if loop.restored is not None},
    }
    log.info("reloaded %s: %s", config.path, report_line(report))
    daemon.status_file.write()
    return report


def what_changed(old: ServiceConfig, new: ServiceConfig) -> str:
    a, b = old.model_dump(), new.model_dump()
    keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    if (old.executor and old.executor.settings) != (new.executor and new.executor.settings):
        keys.append("executor")
    if fingerprint(old)[2] != fingerprint(new)[2]:
        keys.append("sources")
    return ", ".join(keys)


def report_line(report: dict[str, Any]) -> str:
    parts = []
    if report["changed"]:
        parts.append("restarted " + ", ".join(f"{n} ({why})" for n, why in report["changed"].items()))
    if report["added"]:
        parts.append("started " + ", ".join(report["added"]))
    if report["removed"]:
        parts.append("stopped " + ", ".join(report["removed"]))
    if report["unchanged"]:
        parts.append("unchanged " + ", ".join(report["unchanged"]))
    if report.get("llm_retuned"):
        parts.append("llm " + ", ".join(report["llm_retuned"]) + " changed in place")
    return "; ".join(parts) or "nothing to do"
