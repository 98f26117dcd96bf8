"""A Compose file as the config: its x-docktor blocks validated by docktor.yaml's own models, every
problem named by its place in the Compose file; the LLM found through the services' ``models:``."""

from __future__ import annotations

from pathlib import Path

import pytest

from docktor.agent.advisor.client import resolve_endpoint
from docktor.agent.config.compose_file import DeclaredModel, declared_models, is_compose
from docktor.agent.config.load import parse_config
from docktor.agent.config.model import LLMConfig
from docktor.agent.problems import UsageError
from tests.support.hostile_yaml import billion_laughs

FILE = Path("/srv/shop/docker-compose.yaml")

COMPOSE = """
name: shop
x-worker: &worker
  policy: rules
  check_interval: 5s
x-docktor:
  mode: advisory
  state_dir: state
  metrics: {listen: 9464}
services:
  nats:
    image: nats:2.10
    command: ["-js", "--port", "${NATS_PORT:-4222}"]
  web:
    image: nginx
    environment: ["TOKEN=${UNSET_IN_DOCKTOR}"]
  worker:
    image: python:3.12-slim
    x-docktor:
      <<: *worker
      min_replicas: 1
      max_replicas: ${MAX:-6}
      queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}
      rules:
        scale_up_when: [{metric: queue.backlog, op: ">", value: 100}]
        scale_down_when: [{metric: queue.backlog, op: "<=", value: 10}]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(UsageError) as e:
        parse_config(text, FILE, env or {})
    return [str(p) for p in e.value.problems]


def test_the_x_docktor_blocks_are_the_config_and_the_executor_is_compose_on_this_file() -> None:
    cfg = parse_config(COMPOSE, FILE, {})
    assert cfg.from_compose and cfg.mode == "advisory" and cfg.metrics.listen == "127.0.0.1:9464"
    assert cfg.state_dir == Path("/srv/shop/state")  # relative to the Compose file's folder, as in docktor.yaml
    (svc,) = cfg.services  # nats and web have no x-docktor: Docktor leaves them alone
    assert (svc.name, svc.policy, svc.check_interval, svc.max_replicas) == ("worker", "rules", 5.0, 6)
    assert svc.executor is not None and svc.executor.kind == "compose"
    assert svc.executor.settings.compose_file == Path("docker-compose.yaml")
    assert svc.executor.settings.compose_service is None  # the Docktor service's name: the Compose service's
    assert svc.sources[0].settings.stream == "JOBS"


def test_only_the_x_docktor_blocks_are_interpolated() -> None:
    # web's ${UNSET_IN_DOCKTOR} is Compose's business; worker's ${MAX} is Docktor's
    assert parse_config(COMPOSE, FILE, {"MAX": "9"}).services[0].max_replicas == 9
    missing = COMPOSE.replace("${MAX:-6}", "${MAX}")
    assert problems(missing) == [
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.max_replicas: environment variable MAX is not set"
    ]


def test_a_docktor_yaml_is_not_a_compose_file_and_the_reverse() -> None:
    assert not is_compose({"services": [{"name": "w"}], "x-docktor": {}})
    assert is_compose({"services": {"w": {"image": "x"}}})
    assert is_compose({"x-docktor": {"mode": "advisory"}})
    assert not is_compose({"service": "web", "scaling": {}})  # the Go Docktor's single-service format


def test_errors_name_the_compose_file_and_the_path_in_it() -> None:
    bad = (COMPOSE.replace("min_replicas: 1", "min_replicas: 1\n      max_replica: 3")
           .replace("max_replicas: ${MAX:-6}", "max_replicas: 0")
           .replace("mode: advisory", "mode: advisor")
           .replace('op: ">"', 'op: "=>"'))
    assert problems(bad) == [
        "/srv/shop/docker-compose.yaml: x-docktor.mode: must be 'autonomous' or 'advisory', got 'advisor'",
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.max_replicas: Input should be greater than or equal to 1, got 0",
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.rules.scale_up_when[0].op: "
        "must be '>', '>=', '<', '<=', '==' or '!=', got '=>'",
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.max_replica: unknown key (did you mean 'max_replicas'?)",
    ]


def test_errors_inside_the_messages_and_the_warnings_name_compose_paths_too() -> None:
    dup = COMPOSE.replace(
        '      queue: {kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}',
        '      sources:\n'
        '        - {name: jobs, kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}\n'
        '        - {name: jobs, kind: nats, url: "nats://127.0.0.1:4222", stream: JOBS, consumer: WORKERS}',
    )
    assert problems(dup) == [
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.sources[1].name: duplicate source name 'jobs' "
        "(also services.worker.x-docktor.sources[0])"
    ]
    old = COMPOSE.replace("consumer: WORKERS}", "consumer: WORKERS, jetstream: true}")
    assert parse_config(old, FILE, {}).warnings == (
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.queue.jetstream: deprecated, "
        "this source always reads NATS through JetStream",
    )


@pytest.mark.parametrize(("key", "why"), [
    ("name", "the service's name is its key under services:"),
    ("executor", "a service of a Compose file is scaled by the compose executor"),
    ("compose_file", "the compose file is this file"),
    ("compose_service", "the service scaled is the one this block is in"),
])
def test_what_the_compose_file_answers_itself_is_refused_in_a_service_block(key: str, why: str) -> None:
    bad = COMPOSE.replace("      min_replicas: 1", f"      min_replicas: 1\n      {key}: other")
    assert problems(bad) == [f"/srv/shop/docker-compose.yaml: services.worker.x-docktor.{key}: not here: {why}"]


def test_the_compose_executors_own_settings_are_written_in_the_service_block() -> None:
    ok = COMPOSE.replace("      min_replicas: 1", "      min_replicas: 1\n      scale_timeout: 90s\n      project: other")
    settings = parse_config(ok, FILE, {}).services[0].executor.settings  # type: ignore[union-attr]
    assert (settings.scale_timeout, settings.project) == (90.0, "other")
    bad = COMPOSE.replace("      min_replicas: 1", "      min_replicas: 1\n      scale_timeout: -1")
    assert problems(bad) == [
        "/srv/shop/docker-compose.yaml: services.worker.x-docktor.scale_timeout: Input should be greater than 0, got -1"
    ]


def test_the_shape_of_the_blocks_is_checked_with_one_line_each() -> None:
    assert problems(COMPOSE.replace("  mode: advisory", "  services: []")) == [
        "/srv/shop/docker-compose.yaml: x-docktor.services: not here: each service's settings go in its own "
        "x-docktor: block under services:"
    ]
    assert problems("services:\n  web: {image: nginx}\nx-docktor: [advisory]\n") == [
        "/srv/shop/docker-compose.yaml: x-docktor: must be a mapping of Docktor's top-level settings (mode, llm, metrics, state_dir, ...)"
    ]
    assert problems("services:\n  web:\n    image: nginx\n    x-docktor: 3\n") == [
        "/srv/shop/docker-compose.yaml: services.web.x-docktor: must be a mapping: docktor.yaml's service settings "
        "(min_replicas, queue, rules ...)"
    ]
    nothing = problems("services:\n  web: {image: nginx}\n")
    assert nothing == [
        "/srv/shop/docker-compose.yaml: services: no service has an x-docktor: block, so Docktor has nothing to scale "
        "(add x-docktor: {max_replicas: 4, queue: ...} to each service it should scale)"
    ]


def test_a_hostile_compose_file_is_refused_by_the_same_bounded_loader() -> None:
    bomb = billion_laughs().replace("services: [*i]", "services:\n  w:\n    x-docktor: {sink: *i}")
    (line,) = problems(bomb)
    assert line.startswith("/srv/shop/docker-compose.yaml: refused: anchors and aliases expand to more than 100,000 values")
    (loop,) = problems("services: &s\n  w:\n    x-docktor: *s\n")
    assert "refers to the node that contains it" in loop


# --------------------------------------------------------------------------- models:


def test_declared_models_follow_composes_naming() -> None:
    raw = {
        "services": {
            "docktor": {"models": ["llm", "embedding-model"]},
            "app": {"models": {"chat": {"endpoint_var": "CHAT_URL", "model_var": "CHAT_NAME"}, "small": None}},
            "web": {"image": "nginx"},
        }
    }
    assert declared_models(raw) == [
        DeclaredModel("docktor", "llm", "LLM_URL", "LLM_MODEL"),
        DeclaredModel("docktor", "embedding-model", "EMBEDDING_MODEL_URL", "EMBEDDING_MODEL_MODEL"),
        DeclaredModel("app", "chat", "CHAT_URL", "CHAT_NAME"),
        DeclaredModel("app", "small", "SMALL_URL", "SMALL_MODEL"),
    ]


def with_models(models: str, llm: str = "{from: compose}") -> str:
    return COMPOSE.replace("  mode: advisory", f"  mode: advisory\n  llm: {llm}").replace(
        "  web:\n", f"  docktor:\n    image: docktor\n    models: {models}\n  web:\n")


def test_from_compose_reads_the_variables_its_one_declared_model_names() -> None:
    cfg = parse_config(with_models("{brain: {endpoint_var: BRAIN_ENDPOINT, model_var: BRAIN_NAME}}"), FILE, {})
    assert (cfg.llm.from_, cfg.llm.provider) == ("compose", "openai-compatible")
    assert cfg.llm.endpoint_vars() == ("BRAIN_ENDPOINT", "BRAIN_NAME")
    env = {"BRAIN_ENDPOINT": "http://model-runner.docker.internal/engines/v1/", "BRAIN_NAME": "ai/smollm2"}
    ep = resolve_endpoint(cfg.llm, env)
    assert (ep.base_url, ep.model) == ("http://model-runner.docker.internal/engines/v1", "ai/smollm2")
    assert ep.found == "Compose models: endpoint from BRAIN_ENDPOINT, model from BRAIN_NAME"


def test_several_declared_models_need_to_be_named() -> None:
    assert problems(with_models("[llm, embedder]")) == [
        "/srv/shop/docker-compose.yaml: x-docktor.llm.from: the Compose file declares several models "
        "(LLM_URL (models: llm of docktor), EMBEDDER_URL (models: embedder of docktor)): "
        "say which with llm.endpoint_var and llm.model_var"
    ]
    named = parse_config(with_models("[llm, embedder]", "{from: compose, endpoint_var: LLM_URL, model_var: LLM_MODEL}"), FILE, {})
    assert named.llm.endpoint_vars() == ("LLM_URL", "LLM_MODEL")


def test_from_compose_and_a_base_url_contradict() -> None:
    assert problems(with_models("[llm]", "{from: compose, base_url: 'http://x/v1'}")) == [
        "/srv/shop/docker-compose.yaml: x-docktor.llm.base_url: from: compose reads the endpoint from the environment "
        "Compose sets; remove base_url or from, got 'http://x/v1'"
    ]


def test_from_compose_says_which_variable_is_missing() -> None:
    llm = LLMConfig.model_validate({"from": "compose"})
    with pytest.raises(UsageError) as e:
        resolve_endpoint(llm, {})
    assert [str(p) for p in e.value.problems] == [
        "llm.from: compose: LLM_URL is not set (Compose sets it in a service that declares models:; "
        "another name: llm.endpoint_var)"
    ]
    with pytest.raises(UsageError) as e:
        resolve_endpoint(llm, {"LLM_URL": "http://h/v1"})
    assert [str(p) for p in e.value.problems] == [
        "llm.from: compose: LLM_URL is set but LLM_MODEL is not (another name: llm.model_var; or set llm.model)"
    ]
    own_model = resolve_endpoint(LLMConfig.model_validate({"from": "compose", "model": "mine"}), {"LLM_URL": "http://h/v1", "LLM_MODEL": "theirs"})
    assert own_model.model == "mine" and own_model.found == "Compose models: endpoint from LLM_URL, model from llm.model"


def test_no_base_url_with_the_variables_set_uses_them_and_says_so() -> None:
    dmr = LLMConfig(provider="dmr")
    env = {"LLM_URL": "http://model-runner.docker.internal/engines/v1/", "LLM_MODEL": "ai/smollm2"}
    ep = resolve_endpoint(dmr, env)
    assert (ep.base_url, ep.model, ep.found) == (
        "http://model-runner.docker.internal/engines/v1", "ai/smollm2", "Compose models: endpoint from LLM_URL, model from LLM_MODEL")
    plain = resolve_endpoint(dmr, {})  # nothing injected: the provider's own defaults, as before
    assert plain.base_url == "http://localhost:12434/engines/llama.cpp/v1"
    assert plain.found == "endpoint from provider dmr's default, model from provider dmr's default"
    written = resolve_endpoint(LLMConfig(provider="openai-compatible", base_url="http://me/v1", model="m"), env)
    assert (written.base_url, written.found) == ("http://me/v1", "endpoint from llm.base_url, model from llm.model")


def test_the_nats_multi_examples_x_docktor_is_its_docktor_yaml() -> None:
    """examples/nats-multi keeps its config twice (docktor.yaml, and x-docktor in its Compose
    file): both must load into the same service, or one of them drifted."""
    from docktor.agent.config.load import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "nats-multi"
    env = {"DOCKTOR_METRICS_PORT": "9555", "NATS_PORT": "4333", "TARGET_WAIT": "12s"}
    own, compose = (load_config(example / name, env) for name in ("docktor.yaml", "docker-compose.yaml"))
    assert compose.from_compose and not own.from_compose
    assert (compose.mode, compose.metrics, compose.state_dir) == (own.mode, own.metrics, own.state_dir)
    (a,), (b,) = own.services, compose.services
    assert a.model_dump() == b.model_dump() and a.target_wait == 12.0
    assert a.executor is not None and b.executor is not None
    assert (a.executor.kind, a.executor.settings) == (b.executor.kind, b.executor.settings)
    assert [(s.name, s.kind, s.settings) for s in a.sources] == [(s.name, s.kind, s.settings) for s in b.sources]


def test_a_broken_compose_file_still_says_where_its_daemons_state_is(tmp_path: Path) -> None:
    # daemon stop and status work when the config no longer validates: the state_dir is read leniently
    from docktor.agent.runtime.locate import lenient_state_dir, locate

    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.replace("max_replicas: ${MAX:-6}", "max_replicas: many"))
    assert lenient_state_dir(broken) == tmp_path / "state"
    located = locate(broken)
    assert (located.paths.state_dir, located.how) == (tmp_path / "state", "state_dir read from the file")
    assert located.problems == [f"{broken}: services.worker.x-docktor.max_replicas: "
                                "Input should be a valid integer, unable to parse string as an integer, got 'many'"]
