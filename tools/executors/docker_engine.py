"""One way to reach a Docker engine for the Compose and Swarm executors: bounded, retried, one line on failure.

The engine is the one ``DOCKER_HOST`` names (``unix://``, ``tcp://`` with ``DOCKER_TLS_VERIFY`` /
``DOCKER_CERT_PATH``, or ``ssh://user@host``), as for the ``docker`` CLI. For ``ssh://`` the SDK
runs the system's ``ssh`` client, as the CLI does (so ``~/.ssh/config``, agents and known hosts
apply, and no paramiko is needed): ``ssh host docker system dial-stdio`` on the far side.

Every request has an HTTP timeout, a bound on the whole call (retries included) and a tenacity
retry policy (3 attempts, exponential wait) for connection errors and 5xx answers. The SDK is
blocking; calls run in a worker thread so a slow engine never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from docktor.tools.executors.docker_stats import Sample, aggregate, sample
from docktor.tools.executors.scale_in import timed_scale
from docktor.tools.sdk import (
    Context,
    Executor,
    ExecutorError,
    PluginSettings,
    RemovedReplica,
    ScaleOutcome,
    redact_url,
    scrub,
    standard,
)

T = TypeVar("T")
S = TypeVar("S", bound=PluginSettings)

#: HTTP timeout of one engine request; a call retries on top of it
ENGINE_TIMEOUT_S = 10.0
#: overall bound for one call, retries included
CALL_TIMEOUT_S = 30.0


def transient(exc: BaseException) -> bool:
    """Worth another try: the engine could not be reached, or answered 5xx (a 404 is an answer)."""
    if isinstance(exc, NotFound):
        return False
    if isinstance(exc, APIError):
        return exc.status_code is None or exc.status_code >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, DockerException))


engine_retry = retry(
    retry=retry_if_exception(transient),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.2, max=2.0),
    reraise=True,
)


def short(e: BaseException) -> str:
    """The engine's own explanation when it gave one, else the first line of the error, with
    control characters scrubbed (the engine relays text from images and containers)."""
    text = getattr(e, "explanation", None) or str(e)
    lines = [scrub(line) for line in str(text).splitlines() if scrub(line)]
    return lines[0][:300] if lines else type(e).__name__


def engine_address() -> str:
    """The engine as ``DOCKER_HOST`` names it (the default socket when unset), for ``target()``."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def engine_label() -> str:
    """The engine, for a message: ``DOCKER_HOST`` without any credential in it."""
    return redact_url(os.environ.get("DOCKER_HOST") or "the default socket")


def client_from_env(timeout: float = ENGINE_TIMEOUT_S) -> docker.DockerClient:
    """A client for the engine ``DOCKER_HOST`` names (``ssh://`` through the ``ssh`` binary)."""
    host = os.environ.get("DOCKER_HOST", "")
    client: docker.DockerClient = _EngineClient.from_env(timeout=int(timeout), use_ssh_client=host.startswith("ssh://"))
    return client


class _EngineAPI(docker.APIClient):  # type: ignore[misc]
    """The SDK's client, verifying a TLS engine with ``DOCKER_CERT_PATH``'s CA whatever
    ``REQUESTS_CA_BUNDLE`` says.

    The client is a requests session, and requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``
    replace the session's CA on every request: with either set (common where a corporate CA is
    installed), a TLS engine would be checked against the wrong CA and refused. Proxies from the
    environment still apply.
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


class _EngineClient(docker.DockerClient):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.api = _EngineAPI(*args, **kwargs)


class Engine:
    """A lazily connected engine client whose calls are async, bounded and retried."""

    def __init__(self, timeout: float = ENGINE_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = client_from_env(self.timeout)
            except DockerException as e:
                raise ExecutorError(f"Docker engine: {short(e)}") from None
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    async def call(self, fn: Callable[..., T], *args: Any, timeout: float = CALL_TIMEOUT_S, answers: bool = False) -> T:
        """``fn(*args)`` in a thread, retried on transient errors, bounded by ``timeout``.

        Raises :class:`ExecutorError` with one line when the engine cannot answer. With
        ``answers``, an :class:`~docker.errors.APIError` that is an answer (404, 409, a worker
        node's 503 ...) is raised as is, for the caller to explain.
        """
        try:
            return await asyncio.wait_for(asyncio.to_thread(engine_retry(fn), *args), timeout)
        except TimeoutError:
            raise ExecutorError(f"Docker engine did not answer within {timeout:g}s") from None
        except APIError as e:
            if answers and not transient(e):
                raise
            raise ExecutorError(f"Docker engine: {short(e)}") from None
        except (DockerException, requests.RequestException) as e:
            raise ExecutorError(f"Docker engine: {short(e)}") from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)


# --------------------------------------------------------------------------- container stats

#: bound on one container's stats request
STATS_TIMEOUT_S = 8.0
#: how long a status() waits for a metrics refresh before answering with the previous figures
METRICS_WAIT_S = 0.3
#: older figures are dropped rather than reported (they describe other replicas by then)
METRICS_MAX_AGE_S = 30.0


class ContainerStats:
    """CPU and memory of a service's running containers, read concurrently, refreshed in the background.

    The engine may take a second or more per stats request even when asked for a one-shot
    reading, which would make status() (and so every tick) that slow; the refresh runs on its own
    and :meth:`recent` waits for it only briefly, answering with the previous figures (at most
    :data:`METRICS_MAX_AGE_S` old) when it is not done yet. Each container's CPU figure is kept
    too (:meth:`cpu_by_container`): scale-in prefers the idlest replicas.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: each running container's previous cpu_stats, the earlier sample for CPU percent
        self._cpu_seen: dict[str, dict[str, Any]] = {}
        self._refresh: asyncio.Task[tuple[dict[str, float], dict[str, float]]] | None = None
        # stats requests can block ~1 s each in the engine: a pool of their own keeps them from
        # queueing up the listing calls status() needs at once
        self._pool = ThreadPoolExecutor(max_workers=10, thread_name_prefix="docktor-stats")
        self._last: tuple[float, dict[str, float], dict[str, float]] | None = None

    async def recent(self, containers: Sequence[tuple[str, int]]) -> dict[str, float]:
        """Aggregate figures over ``containers`` (id, memory limit), refreshed in the background."""
        if not containers:
            return {}
        if self._refresh is None or self._refresh.done():
            started = time.monotonic()
            self._refresh = asyncio.create_task(self.read(containers))
            self._refresh.add_done_callback(lambda t: self._keep(t, started))
        try:
            await asyncio.wait_for(asyncio.shield(self._refresh), METRICS_WAIT_S)
        except TimeoutError:
            pass
        if self._last is None or time.monotonic() - self._last[0] > METRICS_MAX_AGE_S:
            return {}
        return dict(self._last[1])

    def cpu_by_container(self) -> dict[str, float]:
        """The latest CPU percent of each container that has one (empty when too old)."""
        if self._last is None or time.monotonic() - self._last[0] > METRICS_MAX_AGE_S:
            return {}
        return dict(self._last[2])

    def _keep(self, task: asyncio.Task[tuple[dict[str, float], dict[str, float]]], started: float) -> None:
        if not task.cancelled() and task.exception() is None:
            figures, per_container = task.result()
            self._last = (started, figures, per_container)

    async def read(self, containers: Sequence[tuple[str, int]]) -> tuple[dict[str, float], dict[str, float]]:
        """CPU and memory over ``containers``, read concurrently: the aggregate (absent when any
        reading fails) and each container's CPU percent."""
        live = {cid for cid, _ in containers}
        for gone in self._cpu_seen.keys() - live:
            del self._cpu_seen[gone]
        if not containers:
            return {}, {}
        samples = await asyncio.gather(*(self._one(cid, limit) for cid, limit in containers))
        per_container = {cid: s.cpu_pct for (cid, _), s in zip(containers, samples) if s is not None and s.cpu_pct is not None}
        if any(s is None for s in samples):
            return {}, per_container
        return aggregate(s for s in samples if s is not None), per_container

    async def _one(self, container_id: str, memory_limit: int) -> Sample | None:
        api = self.engine.api
        # one_shot: the engine may answer without taking a second sample (it does not always);
        # the earlier sample for CPU is then our previous reading of the same container
        call = engine_retry(lambda: api.stats(container_id, stream=False, one_shot=True))
        loop = asyncio.get_running_loop()
        try:
            raw = await asyncio.wait_for(loop.run_in_executor(self._pool, call), STATS_TIMEOUT_S)
        except (TimeoutError, DockerException, requests.RequestException):
            return None
        previous = self._cpu_seen.get(container_id)
        if raw.get("cpu_stats", {}).get("system_cpu_usage") is not None:
            self._cpu_seen[container_id] = raw["cpu_stats"]
        return sample(raw, memory_limit, previous)

    def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


class DockerExecutor(Executor[S]):
    """What the Compose and Swarm executors share: an engine, its containers' CPU and memory read in
    the background (``collect_metrics``), and one scale at a time, timed, a failure an outcome."""

    provides = standard("cpu.avg", "cpu.max", "mem.avg_mb", "mem.max_mb", "mem.avg_pct")

    def __init__(self, settings: S, context: Context, *, collect_metrics: bool = True) -> None:
        super().__init__(settings, context)
        self.collect_metrics = collect_metrics
        self._engine = Engine()
        self._stats = ContainerStats(self._engine)
        self._lock = asyncio.Lock()

    async def scale(self, replicas: int) -> ScaleOutcome:
        return await timed_scale(self._lock, replicas, self._scale)

    @abstractmethod
    async def _scale(self, n: int, started: float, removed: list[RemovedReplica]) -> tuple[str, bool, int | None]:
        """One scale (a :data:`ScaleStep`), under the lock."""

    async def close(self) -> None:
        self._stats.close()
        await self._engine.close()
