"""executor: keda keeps the count it was asked for (the count ``docktor keda`` serves) across a
restart, refuses a state file it cannot trust, and never claims to have verified anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docktor.tools.executors.keda import KedaExecutor, KedaSettings
from docktor.tools.sdk import Context, ExecutorError


def _executor(tmp_path: Path, **settings: object) -> KedaExecutor:
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return KedaExecutor(KedaSettings.model_validate({"kind": "keda", "initial_replicas": 2, **settings}), Context("worker", tmp_path, state))


async def test_the_count_asked_for_survives_a_restart(tmp_path: Path) -> None:
    first = _executor(tmp_path)
    assert (await first.status()).desired == 2  # nothing asked yet: initial_replicas
    outcome = await first.scale(7)
    assert outcome.ok and outcome.running is None and "nothing is actuated" in outcome.message and "(was 2)" in outcome.message
    saved = tmp_path / "state" / "keda" / "worker.json"
    assert json.loads(saved.read_bytes())["replicas"] == 7 and saved.stat().st_mode & 0o777 == 0o600
    again = _executor(tmp_path)  # a restarted docktor keda answers what it had, not initial_replicas
    status = await again.status()
    assert (status.desired, status.running) == (7, 7)


@pytest.mark.parametrize("content", [b"not json", b'{"replicas": -3}', b'{"replicas": true}', b"{}"])
async def test_a_saved_count_that_is_not_a_count_is_an_executor_error(tmp_path: Path, content: bytes) -> None:
    executor = _executor(tmp_path)
    folder = tmp_path / "state" / "keda"
    folder.mkdir(mode=0o700)
    (folder / "worker.json").write_bytes(content)
    (folder / "worker.json").chmod(0o600)
    with pytest.raises(ExecutorError, match="does not hold a replica count"):
        await executor.status()


async def test_a_linked_state_file_is_refused(tmp_path: Path) -> None:
    executor = _executor(tmp_path)
    folder = tmp_path / "state" / "keda"
    folder.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"replicas": 40}')
    (folder / "worker.json").symlink_to(elsewhere)
    with pytest.raises(ExecutorError, match="cannot be read"):
        await executor.status()


def test_settings_name_the_scaled_object_and_need_a_starting_count() -> None:
    from pydantic import ValidationError

    assert KedaExecutor(KedaSettings(kind="keda", initial_replicas=1, scaled_object="jobs/worker"), Context("w", Path("/"), Path("/"))).target() == "keda:jobs/worker"
    with pytest.raises(ValidationError, match="initial_replicas"):
        KedaSettings.model_validate({"kind": "keda"})
    with pytest.raises(ValidationError, match="scaled_object"):
        KedaSettings.model_validate({"kind": "keda", "initial_replicas": 1, "scaled_object": "no-namespace"})
