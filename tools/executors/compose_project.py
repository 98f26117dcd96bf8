"""The Compose project a service belongs to: its name as Compose derives it, and the CLI that scales it.

Changing the count goes through the Compose CLI (so Compose keeps owning names, networks, the
config hash and container numbers), as an argument list, never a shell string. What the CLI
prints is only ever quoted in an error (its error lines, scrubbed); everything Docktor *reads*
comes from the engine (:mod:`.compose_replicas`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from docktor.tools.sdk import ExecutorError, scrub
from docktor.tools.sdk.safe_yaml import YAMLTooBig, load_yaml

CLI_PROBE_TIMEOUT_S = 15.0


def normalize_project_name(name: str) -> str:
    """Compose's rule: lower-case, keep ``[a-z0-9_-]``, start with a letter or digit."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def _dotenv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def default_project(compose_file: Path, env: dict[str, str] | None = None) -> str:
    """The project name Compose itself would use for ``-f compose_file`` with no ``-p``.

    Precedence as in Compose: ``COMPOSE_PROJECT_NAME`` (environment, then the project's ``.env``),
    the file's top-level ``name:``, then the compose file's directory name.
    """
    env = dict(os.environ) if env is None else env
    from_env = env.get("COMPOSE_PROJECT_NAME") or _dotenv(compose_file.parent / ".env").get("COMPOSE_PROJECT_NAME")
    if from_env:
        return normalize_project_name(from_env)
    try:
        doc = load_yaml(compose_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, YAMLTooBig):
        doc = None
    name = doc.get("name") if isinstance(doc, dict) else None
    if isinstance(name, str) and name and "$" not in name:
        return normalize_project_name(name)
    return normalize_project_name(compose_file.resolve().parent.name)


def find_compose_cli(timeout: float = CLI_PROBE_TIMEOUT_S) -> list[str]:
    """``["docker", "compose"]`` when the v2 plugin works, else ``["docker-compose"]``.

    Raises :class:`ExecutorError` naming both when neither is usable.
    """
    tried: list[str] = []
    candidates: list[list[str]] = []
    if docker_bin := shutil.which("docker"):
        candidates.append([docker_bin, "compose"])
    else:
        tried.append("`docker compose` (no docker CLI on PATH)")
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    else:
        tried.append("`docker-compose` (not on PATH)")
    for cmd in candidates:
        label = "docker compose" if len(cmd) == 2 else "docker-compose"
        try:
            done = subprocess.run([*cmd, "version"], capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"`{label}` ({e})")
            continue
        if done.returncode == 0:
            return cmd
        tried.append(f"`{label}` (exit {done.returncode}: {tail(done.stdout + done.stderr, 1) or 'no output'})")
    raise ExecutorError(
        "no Docker Compose CLI found: tried the `docker compose` v2 plugin and the standalone "
        f"`docker-compose`: {'; '.join(tried)}. Install Docker Compose v2."
    )


PULL_FAILURE = re.compile(
    r"pull access denied|manifest unknown|manifest for .* not found|no such host|repository does not exist|"
    r"failed to solve|failed to resolve|no such image|toomanyrequests",
    re.I,
)


def tail(output: bytes | str, lines: int = 3) -> str:
    """The CLI's last error lines (else its last lines), on one line, control characters scrubbed."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    rows = [scrub(r) for r in text.splitlines() if scrub(r)]
    errors = [r for r in rows if re.search(r"error|denied|not found|failed|invalid|no such", r, re.I)]
    chosen = list(dict.fromkeys(errors or rows))[-lines:]
    return " | ".join(chosen)[:600]


async def run_compose(cli: list[str], project: str, compose_file: Path, args: list[str], timeout: float) -> tuple[int, str]:
    """``<cli> -p project -f file <args>`` in the compose file's folder: its exit code and output."""
    cmd = [*cli, "-p", project, "-f", str(compose_file), *args]
    env = {**os.environ, "COMPOSE_ANSI": "never"}
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(compose_file.parent),
            env=env,
        )
    except OSError as e:
        raise ExecutorError(f"cannot run {cmd[0]}: {e}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise ExecutorError(f"docker compose {args[0]} did not finish within {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")
