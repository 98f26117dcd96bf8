"""Finding a config's daemon from outside: ``daemon status`` (live over its socket, else from its
status file), and where its state folder is when the config file no longer loads (``daemon stop``
and ``status`` must work with a broken config).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.agent.config.model import DocktorConfig
from docktor.agent.problems import UsageError
from docktor.agent.runtime.process import Paths, paths_for, read_state_file, running_pid

#: how long ``daemon status`` waits for the daemon's answer before reading its status file
STATUS_TIMEOUT_S = 3.0


def status(paths: Paths, *, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """The daemon's own answer on its control socket (``live: true``); from a daemon that does not
    answer (stuck, or too old to have a socket), its status file (``live: false`` and why)."""
    from docktor.agent.runtime.control_socket import ControlClient, ControlError, ControlUnavailable

    pid = running_pid(paths)
    out: dict[str, Any] = {"running": pid is not None, "pid": pid, "state_dir": str(paths.state_dir)}
    if pid is None:
        return out
    try:
        live = ControlClient(paths.socket, timeout=timeout).status()
    except (ControlUnavailable, ControlError) as e:
        out["live"] = False
        out["not_live_because"] = f"the daemon does not answer on {paths.socket}: {e}"
    else:
        out.update(live, live=True, running=True, pid=live.get("pid", pid))
        try:
            from docktor.agent.timestamps import parse_rfc3339

            out["uptime_s"] = round(time.time() - parse_rfc3339(str(live.get("started_at"))), 1)
        except ValueError:
            out["uptime_s"] = None
        return out
    try:
        st = json.loads(read_state_file(paths.status))
        age: float | None = round(time.time() - paths.status.stat().st_mtime, 1)
    except (OSError, ValueError):
        st, age = {}, None
    out["status_file_age_s"] = age
    for key in ("mode", "started_at", "phase", "config"):
        out[key] = st.get(key)
    try:
        out["uptime_s"] = round(time.time() - paths.pid.stat().st_mtime, 1)
    except OSError:
        out["uptime_s"] = None
    out["services"] = st.get("services", {})
    out["decision_log"] = st.get("decision_log")
    return out


@dataclass
class Located:
    """Where the daemon of a config keeps its state, and how that was found."""

    paths: Paths
    config: DocktorConfig | None  # None: the config file does not load
    how: str  # "config", "the running daemon's record", "state_dir read from the file", "the default"
    problems: list[str]


def locate(config_path: Path) -> Located:
    """The state folder for ``config_path``, valid config or not.

    In order: the pointer a daemon started from this file left (while that daemon runs: it is
    the truth even if the file now says another ``state_dir``); the config itself; the last
    pointer; ``state_dir`` read leniently from the YAML (a top-level string, no ``${VAR}``); the
    default ``.docktor`` beside the file.
    """
    from docktor.agent.config.load import load_config
    from docktor.agent.runtime.rundir import read_pointer

    pointer = read_pointer(config_path)
    if pointer is not None:
        p = Paths(Path(pointer["state_dir"]))
        if running_pid(p) is not None:
            try:
                cfg: DocktorConfig | None = load_config(config_path)
            except UsageError:
                cfg = None
            return Located(p, cfg, "the running daemon's record", [])
    try:
        cfg = load_config(config_path)
    except UsageError as e:
        problems = [str(x) for x in e.problems]
    else:
        return Located(paths_for(cfg), cfg, "config", [])
    if pointer is not None:
        return Located(Paths(Path(pointer["state_dir"])), None, "the last daemon's record", problems)
    lenient = lenient_state_dir(config_path)
    if lenient is not None:
        return Located(Paths(lenient), None, "state_dir read from the file", problems)
    return Located(Paths(config_path.resolve().parent / ".docktor"), None, "the default", problems)


def lenient_state_dir(config_path: Path) -> Path | None:
    """A top-level ``state_dir:`` string (a Compose file's top-level ``x-docktor:``'s) from a file
    that may not validate (or even parse)."""
    import re

    try:
        text = config_path.read_text(errors="replace")[:1_000_000]
    except OSError:
        return None
    value: Any = None
    try:
        from docktor.tools.sdk.safe_yaml import load_yaml

        doc = load_yaml(text)
        top = doc.get("x-docktor") if isinstance(doc, dict) and isinstance(doc.get("services"), dict) else doc
        value = top.get("state_dir") if isinstance(top, dict) else None  # a Compose file's is in x-docktor
    except Exception:  # not YAML at all: look for the line itself
        m = re.search(r"(?m)^state_dir:[ \t]*['\"]?([^'\"#\n]+?)['\"]?[ \t]*(#.*)?$", text)
        value = m.group(1) if m else None
    if not isinstance(value, str) or not value.strip() or "$" in value:
        return None
    p = Path(value.strip())
    return p if p.is_absolute() else config_path.resolve().parent / p
