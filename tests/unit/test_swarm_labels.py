"""Swarm labels are docktor.yaml's service block flattened, checked against the same schema: the
example of docs/configuration.md and the examples' services load the same both ways, the error
the page shows is the one given, and what the labels cannot say is refused by name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from docktor.agent.config.load import parse_config
from docktor.agent.config.model import DocktorConfig, ServiceConfig
from docktor.agent.config.swarm_labels import SERVICE_OWN, discovered, flatten
from docktor.agent.problems import UsageError

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "configuration.md").read_text()
SECTION = DOC.split("## On Docker Swarm: labels\n", 1)[1].split("\n## ", 1)[0]


def base(tmp_path: Path) -> DocktorConfig:
    return parse_config("discover: {swarm_labels: true}\n", tmp_path / "docktor.yaml", {})


def same(a: ServiceConfig, b: ServiceConfig) -> None:
    """The same service: its settings, its executor's and its sources'."""
    assert a.model_dump() == b.model_dump()
    assert a.executor is not None and b.executor is not None
    assert (a.executor.kind, a.executor.settings) == (b.executor.kind, b.executor.settings)
    assert [(s.name, s.kind, s.settings, s.primary, s.on_missing) for s in a.sources] == \
        [(s.name, s.kind, s.settings, s.primary, s.on_missing) for s in b.sources]


def as_docktor_yaml(tmp_path: Path, name: str, block: dict[str, Any]) -> ServiceConfig:
    doc = {"discover": {"swarm_labels": True}, "services": [{**block, "name": name, "executor": "swarm", "service": name}]}
    return parse_config(yaml.safe_dump(doc), tmp_path / "docktor.yaml", {}).services[0]


def test_the_pages_example_is_the_service_block_it_flattens(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", SECTION, re.S)
    top = parse_config(blocks[0], tmp_path / "docktor.yaml", {})
    assert top.discover.swarm_labels and top.services == []
    labels = yaml.safe_load(blocks[1])["services"]["worker"]["deploy"]["labels"]
    found = discovered({"shop_worker": labels}, top)
    assert not found.refused
    (svc,) = found.services
    block = {"min_replicas": 1, "max_replicas": 8, "policy": "rules", "check_interval": "5s",
             "queue": {"kind": "nats", "url": "nats://nats:4222", "stream": "JOBS", "consumer": "WORKERS"},
             "rules": {"scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 500}],
                       "scale_down_when": [{"metric": "queue.backlog", "op": "<=", "value": 100}]}}
    same(svc, as_docktor_yaml(tmp_path, "shop_worker", block))


def test_the_pages_error_is_the_one_given(tmp_path: Path) -> None:
    labels = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", SECTION, re.S)[1])["services"]["worker"]["deploy"]["labels"]
    found = discovered({"shop_worker": {**labels, "docktor.min_replicas": "lots"}}, base(tmp_path))
    shown = re.search(r"```\nERROR docktor: (.*?)\n```", SECTION, re.S).group(1)  # type: ignore[union-attr]
    assert found.services == []
    assert f"{found.refused['shop_worker']}; skipped, the other services keep scaling" == shown


@pytest.mark.parametrize("example", ["nats-multi/docktor.yaml", "nats-multi/docktor-go-rules.yaml", "celery-redis/docktor.yaml"])
def test_the_examples_services_load_the_same_as_labels(example: str, tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "examples" / example).read_text())
    env = {"NATS_PORT": "4222", "NATS_MONITOR_PORT": "8222", "REDIS_PORT": "6379"}
    for service in raw["services"]:
        # the service block without what a Swarm service's labels cannot say (it is the service)
        block = {k: v for k, v in service.items() if k not in {"name", "executor", "compose_file", "compose_service", "command"}}
        text = yaml.safe_dump({"services": [block]})
        for var, value in env.items():  # labels are read as deployed: no ${VAR} left in them
            text = re.sub(r"\$\{" + var + r"(:-[^}]*)?\}", value, text)
        text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
        block = yaml.safe_load(text)["services"][0]
        labels = {"docktor.enable": "true", **flatten(block)}
        found = discovered({"stack_" + service["name"]: labels}, base(tmp_path))
        assert not found.refused, found.refused
        same(found.services[0], as_docktor_yaml(tmp_path, "stack_" + service["name"], block))


@pytest.mark.parametrize("key", list(SERVICE_OWN))
def test_what_the_swarm_service_answers_itself_is_refused(key: str, tmp_path: Path) -> None:
    found = discovered({"shop_worker": {"docktor.enable": "true", f"docktor.{key}": "x"}}, base(tmp_path))
    assert found.refused["shop_worker"].startswith(f"swarm service shop_worker: label docktor.{key}: not here: ")


@pytest.mark.parametrize(("labels", "line"), [
    ({"docktor.enable": "maybe"}, "swarm service s: label docktor.enable: must be true or false, got 'maybe'"),
    ({"docktor.enable": "true", "docktor.queue": "nats", "docktor.queue.kind": "nats"},
     "swarm service s: label docktor.queue.kind: docktor.queue is set to a value too: give either the value or the keys under it"),
    ({"docktor.enable": "true", "docktor.rules.scale_up_when.1.metric": "queue.backlog"},
     "swarm service s: label docktor.rules.scale_up_when.0: missing: a list's items are numbered 0, 1, 2 ... without gaps (found 1)"),
    ({"docktor.enable": "true", "docktor.max_replica": "3"},
     "swarm service s: label docktor.max_replica: unknown key (did you mean 'max_replicas'?)"),
])
def test_a_label_set_that_does_not_validate_is_one_line_naming_the_service_and_the_label(
        labels: dict[str, str], line: str, tmp_path: Path) -> None:
    found = discovered({"s": labels, "t": {"docktor.enable": "true", "docktor.policy": "rules"}}, base(tmp_path))
    assert found.refused == {"s": line}
    assert [s.name for s in found.services] == ["t"]  # the others are found all the same


def test_not_opted_in_is_not_found_and_the_files_service_wins(tmp_path: Path) -> None:
    config = parse_config("discover: {swarm_labels: true}\nservices: [{name: web, executor: swarm, policy: rules}]\n", tmp_path / "docktor.yaml", {})
    found = discovered({"off": {"docktor.enable": "false"}, "none": {}, "web": {"docktor.enable": "true"}}, config)
    assert found.services == [] and list(found.refused) == ["web"]


def test_a_config_with_no_service_needs_discover(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        parse_config("mode: advisory\n", tmp_path / "docktor.yaml", {})
    assert [p.path for p in e.value.problems] == ["services"]


def test_the_readmes_labels_load(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text().split("### On Docker Swarm: labels\n", 1)[1].split("\n### ", 1)[0]
    labels = yaml.safe_load(re.search(r"```yaml\n(.*?)```", readme, re.S).group(1))["services"]["worker"]["deploy"]["labels"]  # type: ignore[union-attr]
    found = discovered({"shop_worker": labels}, base(tmp_path))
    assert not found.refused and found.services[0].max_replicas == 8
