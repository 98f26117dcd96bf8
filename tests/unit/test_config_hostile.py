"""Hostile or broken docktor.yaml never crashes or hangs: exit 0, or exit 2 with one line per problem.

The named attacks (nesting 1,000 deep, a self-referencing alias, billion laughs, huge numbers and
files) through the real CLI (``validate`` and ``daemon start``, the two commands that load a
config; a later ``reload`` goes through the same loader), and a hypothesis search over mutations
of a valid config, in-process. The subprocess timeout is a hang detector, not a speed target
(figures: ``python -m benchmarks.config_fuzz``, docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docktor.agent.config.load import load_config, parse_config
from docktor.agent.problems import UsageError
from docktor.tools.sdk.safe_yaml import MAX_VALUES, expanded_size, load_yaml
from tests.support.hostile_yaml import NAMED, VALID, billion_laughs, mutate

#: far beyond any honest parse of a 2 MiB file; only a hang gets near it
HANG = 120


def outcome_of(text: str) -> str:
    """'ok', or 'usage' after checking every problem is one non-empty line."""
    try:
        parse_config(text, Path("/tmp/hostile/docktor.yaml"), {"X": "1", "HOME": "/root"})
    except UsageError as e:
        assert e.problems
        for p in e.problems:
            line = str(p)
            assert line and "\n" not in line and "\r" not in line and len(line) <= 400, line
        return "usage"
    return "ok"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


@pytest.mark.parametrize("name,text", NAMED, ids=[n for n, _ in NAMED])
def test_named_hostile_input_is_refused_in_process(name: str, text: str) -> None:
    assert outcome_of(text) == "usage", name


@pytest.mark.parametrize("command", [["validate"], ["daemon", "start", "--foreground"]])
@pytest.mark.parametrize("name,text", [c for c in NAMED if c[0] in {
    "nested lists 1,000 deep", "nested block maps 1,000 deep", "self-referencing alias", "billion laughs (9 x 9)",
    "billion laughs in a string-interpolated field", "a 5,000-digit integer", "a 2 MiB comment", "not UTF-8",
    "a newline inside a key",
}], ids=lambda v: v if isinstance(v, str) and len(v) < 60 else None)
def test_named_hostile_input_through_the_cli_exits_2_with_one_line_per_problem(tmp_path: Path, command: list[str], name: str, text: str) -> None:
    config = write(tmp_path / "docktor.yaml", text)
    done = subprocess.run([sys.executable, "-m", "docktor.agent.cli", *command, "--config", str(config)],
                          capture_output=True, text=True, timeout=HANG, check=False, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.splitlines()
    # one line per problem (the attacks are one problem each; the broken key's service has two)
    assert lines and all(line.startswith("error: ") for line in lines), done.stderr[-2000:]
    assert len(lines) == (2 if name == "a newline inside a key" else 1), lines
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / ".docktor").exists()  # nothing was started, nothing written


def test_a_config_pointed_at_an_endless_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        load_config("/dev/zero")
    assert "too large" in str(e.value)


def test_bounds_leave_honest_anchors_and_merge_keys_alone() -> None:
    cfg = parse_config(VALID, Path("/tmp/d/docktor.yaml"), {})
    assert cfg.services[0].max_replicas == 5  # from the x-defaults anchor, through <<: *defaults
    # a config with many services sharing one anchor is nowhere near the expansion bound
    many = VALID.replace("services:\n", "services:\n" + "".join(
        f"  - {{<<: *defaults, name: w{i}, executor: local, command: sleep 1, policy: rules}}\n" for i in range(300)))
    assert len(parse_config(many, Path("/tmp/d/docktor.yaml"), {}).services) == 301


def test_expansion_is_counted_on_the_shared_graph_without_expanding_it() -> None:
    import yaml

    node = yaml.compose(billion_laughs(levels=9, width=9), Loader=yaml.SafeLoader)
    assert node is not None and expanded_size(node) == MAX_VALUES + 1  # capped, counted in microseconds
    node = yaml.compose(billion_laughs(levels=3, width=3), Loader=yaml.SafeLoader)
    # 3 keys + their values: a = 1 + 3, b = 1 + 3 * 4, c = 1 + 3 * 13, services = 1 + 40; plus the mapping
    assert node is not None and expanded_size(node) == 1 + (1 + 4) + (1 + 13) + (1 + 40) + (1 + 41)
    assert load_yaml("a: &a [1, 2]\nb: [*a, *a]\n") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


ops = st.lists(
    st.tuples(st.integers(0, 8), st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True), st.integers(0, 999)),
    min_size=1, max_size=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_any_mutation_of_a_valid_config_loads_or_is_one_line_per_problem(mutation: list[tuple[int, float, float, int]]) -> None:
    outcome_of(mutate(VALID, mutation))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["&a ", "*a", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "a", ",", "<<: *a\n"]), max_size=80))
def test_any_string_of_yaml_syntax_loads_or_is_one_line_per_problem(tokens: list[str]) -> None:
    outcome_of("".join(tokens))


def test_interpolation_cannot_be_made_to_copy_an_alias_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's hang: ``${VAR}`` interpolation copied every alias. The bound comes first."""
    monkeypatch.setenv("LOL", "lol")
    assert outcome_of(billion_laughs().replace('"lol"', '"${LOL}"')) == "usage"


def test_a_long_problem_is_cut_between_words() -> None:
    """A value echoed back is capped, but never inside a name: half a metric name reads as another one."""
    from docktor.agent.problems import MAX_PROBLEM_CHARS, Problem

    names = [f"queue.metric_{i:02d}_count" for i in range(60)]
    for pad in range(len(names[0]) + 2):  # the cap falls at every place of a name once
        line = str(Problem("services[0].rules.scale_up_when[0].metric", "x" * pad + " available: " + ", ".join(names)))
        assert len(line) <= MAX_PROBLEM_CHARS and line.endswith("…")
        assert line[:-1].split()[-1].rstrip(",") in names, line[-80:]
