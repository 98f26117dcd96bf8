"""The tree tells the story, and stays that way: packaging, dependency direction, no cycles, a light CLI,
small modules."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.peers import REPO

FOLDERS = {"docktor.agent": REPO / "agent", "docktor.tools": REPO / "tools"}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by its installed name."""
    out = {}
    for prefix, root in FOLDERS.items():
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """Every ``docktor.*`` module ``path`` imports, anywhere in the file (lazy imports count too),
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("docktor.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("docktor."):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in found if m in known}


def test_pyproject_lists_every_package_and_ships_the_traces() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join([prefix, *p.parent.relative_to(root).parts])
        for prefix, root in FOLDERS.items()
        for p in root.rglob("__init__.py")
    }
    data_only = {"docktor.agent.sim.traces"}
    assert set(config["packages"]) == on_disk | data_only
    assert config["package-dir"] == {"docktor.agent": "agent", "docktor.tools": "tools"}
    assert config["package-data"] == {"docktor.agent.sim.traces": ["*.csv"], "docktor.agent.keda": ["*.proto"]}
    assert sorted(p.name for p in (REPO / "agent" / "sim" / "traces").glob("*.csv")) == [
        "burst-every-minute.csv", "diurnal.csv", "ramp.csv", "step.csv",
    ]


def test_no_import_cycles() -> None:
    graph = {name: imports(path, name) - {name} for name, path in modules().items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])


def test_dependencies_point_inward() -> None:
    """Plugins import only the SDK and the helper modules of their own folder (never another
    plugin's module, never the agent); the decision core imports no runtime, advisor, simulator or CLI."""
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    plugin_modules = {ep.split(":")[0] for group in ("docktor.sources", "docktor.executors") for ep in entry_points[group].values()}
    for name, path in modules().items():
        deps = imports(path, name)
        if name.startswith(("docktor.tools.sources.", "docktor.tools.executors.")):
            folder = name.rsplit(".", 1)[0] + "."
            outside = {d for d in deps if not d.startswith(("docktor.tools.sdk", folder))}
            assert not outside, f"{name} imports {outside}: a plugin may import only docktor.tools.sdk and its own folder's helpers"
            others = {d for d in deps if d in plugin_modules and d != name}
            assert not others, f"{name} imports {others}: a plugin never imports another plugin"
        if name.startswith("docktor.agent.core."):
            allowed = ("docktor.agent.core", "docktor.agent.config.model", "docktor.tools.sdk")
            outside = {d for d in deps if not d.startswith(allowed)}
            assert not outside, f"{name} imports {outside}: the decision core stays pure"


def test_help_imports_no_heavy_module() -> None:
    """``docktor --help`` must not pay for the LLM client, numpy, pydantic, the Docker SDK or the MCP SDK."""
    probe = (
        "import sys\n"
        "from docktor.agent.cli.app import app\n"
        "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "heavy = {'openai', 'numpy', 'matplotlib', 'pydantic', 'docker', 'nats', 'yaml', 'mcp', 'starlette', 'uvicorn', 'grpc', 'google'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert "Usage: " in done.stdout and "validate" in done.stdout


def test_a_daemon_without_an_llm_never_loads_the_openai_sdk(tmp_path: Path) -> None:
    """The advisor's client is imported only when an LLM is configured: the SDK costs a quarter
    second and tens of MiB a daemon without one never uses (the footprint benchmark's daemon)."""
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from docktor.agent.config.load import parse_config\n"
        "from docktor.agent.runtime.supervisor import Supervisor\n"
        "import docktor.agent.cli.daemon\n"
        f"cfg = parse_config(sys.argv[1], Path({str(tmp_path / 'docktor.yaml')!r}), {{}})\n"
        "Supervisor(cfg)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'openai'), file=sys.stderr)\n"
    )
    config = (f"state_dir: {tmp_path / 'state'}\nservices:\n  - name: w\n    executor: local\n"
              "    command: ['sleep', '3600']\n    policy: docktor\n"
              "    queue: {kind: nats, url: 'nats://127.0.0.1:1', stream: S, consumer: C}\n")
    done = subprocess.run([sys.executable, "-c", probe, config], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


#: the style rule is "small modules, none past ~450 lines"; this is its hard edge
MAX_LINES = 460
#: protoc's output, regenerated from agent/keda/externalscaler.proto, never edited by hand
GENERATED = "agent/keda/externalscaler_pb2*.py"


def test_no_module_is_past_the_line_limit() -> None:
    """Every module of agent/, tools/, benchmarks/ and tests/ stays small enough to read in one go;
    a module that grows past the limit is split by topic (shared test pieces go to tests/support/)."""
    long: dict[str, int] = {}
    for folder in ("agent", "tools", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            if fnmatch.fnmatch(rel, GENERATED) or "__pycache__" in path.parts:
                continue
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long[rel] = n
    assert not long, f"modules past {MAX_LINES} lines (split them by topic): {dict(sorted(long.items()))}"
