"""The LLM found through Compose's ``models:``: the variables set as Compose sets them in the
container of a service that declares the model, pointing at a real llama.cpp server (the peer of
../shared/llm-peer, served at a Docker Model Runner-like ``/engines/v1/``), and ``docktor llm
check`` and ``validate`` reaching it through them and saying where they found it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import docktor
from tests.support.peers import start_llama

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def llama() -> Iterator[str]:
    server, base_url = start_llama("/engines")
    try:
        yield base_url
    finally:
        del server


def compose_yaml(models: str, llm: str = "{from: compose, max_tokens: 200, tools: [get_queue_metrics]}") -> str:
    return f"""
x-docktor:
  mode: advisory
  llm: {llm}
services:
  docktor:
    image: docktor
    models: {models}
  worker:
    image: python:3.12-slim
    x-docktor: {{max_replicas: 4, policy: rules}}
models:
  llm: {{model: ai/llama3.2}}
"""


def test_llm_check_through_the_short_syntax_variables(llama: str, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(compose_yaml("[llm]"))
    # what Compose sets for `models: [llm]`: <KEY>_URL (the runner's endpoint, with its slash) and <KEY>_MODEL
    env = {"LLM_URL": llama + "/", "LLM_MODEL": "ai/llama3.2", "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    checked = docktor("llm", "check", "--compose", "compose.yaml", cwd=tmp_path, env=env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[0] == "found: Compose models: endpoint from LLM_URL, model from LLM_MODEL"
    assert f"endpoint: {llama} (provider openai-compatible, model ai/llama3.2)" in checked.stdout
    assert "model ai/llama3.2: available" in checked.stdout and "usable: yes" in checked.stdout

    validated = docktor("validate", "--compose", "compose.yaml", cwd=tmp_path, env=env)
    assert validated.returncode == 0, validated.stderr
    assert (f"llm: openai-compatible model ai/llama3.2 at {llama} "
            "(Compose models: endpoint from LLM_URL, model from LLM_MODEL)") in validated.stdout.splitlines()


def test_llm_check_through_the_long_syntax_variables(llama: str, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(compose_yaml("{llm: {endpoint_var: AI_ENDPOINT, model_var: AI_NAME}}"))
    env = {"AI_ENDPOINT": llama + "/", "AI_NAME": "ai/llama3.2", "LLM_URL": None, "LLM_MODEL": None,
           "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    checked = docktor("llm", "check", "--compose", "compose.yaml", cwd=tmp_path, env=env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[0] == "found: Compose models: endpoint from AI_ENDPOINT, model from AI_NAME"
    assert "usable: yes" in checked.stdout


def test_llm_check_says_which_variable_compose_did_not_set(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(compose_yaml("[llm]"))
    r = docktor("llm", "check", "--compose", "compose.yaml", cwd=tmp_path, env={"LLM_URL": None, "LLM_MODEL": None})
    assert r.returncode == 2
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: compose.yaml: x-docktor.llm.from: compose: LLM_URL is not set (Compose sets it in a service that declares models:; "
        "another name: llm.endpoint_var)"
    ]
