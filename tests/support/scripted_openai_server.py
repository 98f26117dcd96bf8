"""A scripted OpenAI-protocol HTTP server, for faults a real llama.cpp peer cannot produce on demand.

Not a mock of the advisor's client: the advisor talks real HTTP through the real ``openai`` SDK
to this loopback server, which answers each chat request with the next scripted reply (HTTP
errors, hangs, malformed JSON, hostile text, bad tool calls) and records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: a script item that never answers
HANG = "hang"


@dataclass(frozen=True)
class Status:
    """A non-200 reply."""

    code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Slow:
    """A reply sent after ``seconds``: a slow model, on demand."""

    seconds: float
    reply: Reply


Reply = dict[str, Any] | Status | str | Slow | Callable[[dict[str, Any], dict[str, str]], "Reply"]


def completion(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    refusal: str | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
) -> dict[str, Any]:
    """A chat.completion body as an OpenAI-compatible server sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(tool_calls)
        ]
    if refusal:
        message["refusal"] = refusal
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted-model",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop")}
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


def answer(action: str, target: Any, confidence: Any = 0.8, reason: str = "scripted") -> dict[str, Any]:
    return completion(json.dumps({"action": action, "target_replicas": target, "confidence": confidence, "reason": reason}))


def error(code: int, message: str) -> Status:
    return Status(code, {"error": {"message": message, "type": "server_error", "code": code}})


class ScriptedOpenAIServer:
    """``async with ScriptedOpenAIServer([reply, ...]) as s:`` then point a client at ``s.base_url``.

    Each POST to ``/v1/chat/completions`` consumes the next reply; the last one repeats.
    ``requests`` holds the JSON bodies received, ``headers`` their headers.
    """

    def __init__(self, script: list[Reply], models: list[str] | None = None):
        self.script = list(script)
        self.models = models or ["scripted-model"]
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.other: list[str] = []  # requests to paths other than the chat and models endpoints
        self.first_contact: float | None = None  # time.monotonic() of the first connection
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.base_events.Server | None = None
        self.base_url = ""

    async def __aenter__(self) -> ScriptedOpenAIServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _next(self) -> Reply:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.first_contact = self.first_contact or time.monotonic()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:  # keep-alive: the SDK reuses connections
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    key, _, value = h.decode().partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    reply: Reply = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "scripted"} for m in self.models]}
                elif not path.rstrip("/").endswith("/chat/completions"):
                    self.other.append(f"{method} {path}")  # /props, /api/show ...: not an OpenAI path
                    reply = error(404, f"File Not Found: {path}")
                else:
                    request = json.loads(body)
                    self.requests.append(request)
                    self.headers.append(headers)
                    reply = self._next()
                    if callable(reply):
                        reply = reply(request, headers)
                if isinstance(reply, Slow):
                    await asyncio.sleep(reply.seconds)
                    reply = reply.reply
                if reply == HANG:
                    await asyncio.sleep(3600)
                status, payload = (reply.code, reply.body) if isinstance(reply, Status) else (200, reply)
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
