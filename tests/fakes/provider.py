"""A scripted fake model provider: a real HTTP server speaking the Anthropic, OpenAI and Gemini wire APIs.

It runs uvicorn in a background thread with its own event loop, so sync and async tests alike can
use it and a hung request never blocks the test's loop. Any path prefix is accepted (`/v1`,
`/v1beta`, none) because clients differ; the API is chosen by the path's ending.

    with FakeProvider() as fake:
        ...  # point a client at fake.base_url; inspect fake.requests afterwards
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import provider_wire as wire
from tests.fakes.provider_errors import Failure, Family, error_body, error_headers
from tests.fakes.provider_script import OfferedTool, ToolCall, next_tool_call

Mode = Literal["normal", "hang", "malformed_sse"]
MODELS = ("claude-sonnet-4-5", "gpt-5.5", "gemini-2.5-pro", "grok-code-fast-1")
# A stream cut inside an event's JSON, with no terminating event: what a dropped connection looks like.
_MALFORMED = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_tr',
    b"\n\x00garbage",
)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was empty or not JSON


@dataclass(frozen=True)
class _Api:
    """How one wire API reads a request and builds its reply."""

    family: Family
    offered: Callable[[wire.Json], list[OfferedTool]]
    has_tool_result: Callable[[wire.Json], bool]


_ANTHROPIC = _Api("anthropic", wire.anthropic_offered, wire.anthropic_has_tool_result)
_RESPONSES = _Api("openai", wire.responses_offered, wire.responses_has_tool_result)
_CHAT = _Api("openai", wire.chat_offered, wire.chat_has_tool_result)
_GEMINI = _Api("gemini", wire.gemini_offered, wire.gemini_has_tool_result)


@dataclass
class FakeProvider:
    """The server. Set `mode`, call `fail_next`, change `usage` at any time from the test."""

    usage: wire.Usage = field(default_factory=wire.Usage)
    mode: Mode = "normal"
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: list[Failure] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, retry_after_s: float | None = None, count: int = 1) -> None:
        """The next `count` model requests get this error instead of a reply."""
        self._failures.extend(Failure(status, retry_after_s) for _ in range(count))

    def reset(self) -> None:
        """Back to defaults between tests that share one server (does not release hung requests)."""
        self.usage, self.mode = wire.Usage(), "normal"
        self._failures.clear()
        self.requests.clear()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), lifespan="off", log_level="warning", access_log=False, ws="none", http="h11"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        self._wait_started()
        return self

    def _wait_started(self) -> None:
        for _ in range(500):
            if self._server is not None and self._server.started:
                return
            threading.Event().wait(0.01)
        raise RuntimeError("fake provider did not start within 5 s")

    def stop(self) -> None:
        self._stopping.set()  # releases hung handlers, so uvicorn's graceful shutdown can finish
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- HTTP -----------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        path = request.url.path
        self.requests.append(RecordedRequest(request.method, path, request.url.query, headers, body))
        return body

    async def _handle(self, request: Request) -> Response:
        body = await self._record(request)
        path = request.url.path.rstrip("/")
        if request.method == "GET":
            return self._models(path) if path.endswith("/models") else _not_found(path)
        api = _api_for(path)
        if api is None:
            return _not_found(path)
        if self.mode == "hang":
            return await self._hang()
        if self._failures:
            failure = self._failures.pop(0)
            return JSONResponse(
                error_body(api.family, failure), failure.status, headers=error_headers(api.family, failure)
            )
        return self._reply(api, path, request, body if isinstance(body, dict) else {})

    async def _hang(self) -> Response:
        """Accepts the request and answers nothing until the server stops (client timeouts)."""
        # A worker thread waits on the threading.Event that stop() sets from the test's thread.
        await asyncio.to_thread(self._stopping.wait)
        return Response(status_code=503)

    def _reply(self, api: _Api, path: str, request: Request, body: wire.Json) -> Response:
        if path.endswith(("/count_tokens", ":countTokens")):
            total = self.usage.input + self.usage.cache_read
            return JSONResponse({"input_tokens": total} if api is _ANTHROPIC else {"totalTokens": total})
        call = next_tool_call(api.offered(body), api.has_tool_result(body), body)
        model = _model(path, body)
        streaming = _wants_stream(api, path, body)
        if streaming and self.mode == "malformed_sse":
            return _sse(list(_MALFORMED))
        if api is _ANTHROPIC:
            return self._anthropic(model, call, streaming)
        if api is _RESPONSES:
            # The Responses API is streamed by every client we drive; JSON is kept for completeness.
            return self._responses(model, call, streaming)
        if api is _CHAT:
            return self._chat(model, call, streaming, body)
        return self._gemini(model, call, streaming, body)

    def _anthropic(self, model: str, call: ToolCall | None, streaming: bool) -> Response:
        if streaming:
            return _sse(wire.anthropic_stream(model, call, self.usage))
        return JSONResponse(wire.anthropic_json(model, call, self.usage))

    def _responses(self, model: str, call: ToolCall | None, streaming: bool) -> Response:
        if streaming:
            return _sse(wire.responses_stream(model, call, self.usage))
        return JSONResponse(wire.responses_json(model, call, self.usage))

    def _chat(self, model: str, call: ToolCall | None, streaming: bool, body: wire.Json) -> Response:
        if not streaming:
            return JSONResponse(wire.chat_json(model, call, self.usage))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return _sse(wire.chat_stream(model, call, self.usage, include_usage))

    def _gemini(self, model: str, call: ToolCall | None, streaming: bool, body: wire.Json) -> Response:
        schema = wire.gemini_json_schema(body)
        if streaming:
            return _sse(wire.gemini_stream(model, call, self.usage, schema))
        return JSONResponse(wire.gemini_json(model, call, self.usage, schema))

    def _models(self, path: str) -> Response:
        if self._failures:
            failure = self._failures.pop(0)
            family: Family = "gemini" if "v1beta" in path else "openai"
            return JSONResponse(
                error_body(family, failure), failure.status, headers=error_headers(family, failure)
            )
        # One body that OpenAI, Anthropic and Gemini listing clients all accept: each reads its own keys.
        data = [
            {
                "id": name,
                "object": "model",
                "type": "model",
                "created": 0,
                "owned_by": "fake",
                "display_name": name,
            }
            for name in MODELS
        ]
        models = [{"name": f"models/{name}", "displayName": name} for name in MODELS]
        return JSONResponse({"object": "list", "data": data, "has_more": False, "models": models})


def _api_for(path: str) -> _Api | None:
    if path.endswith(("/messages", "/messages/count_tokens")):
        return _ANTHROPIC
    if path.endswith("/responses"):
        return _RESPONSES
    if path.endswith("/chat/completions"):
        return _CHAT
    if path.endswith((":generateContent", ":streamGenerateContent", ":countTokens")):
        return _GEMINI
    return None


def _wants_stream(api: _Api, path: str, body: wire.Json) -> bool:
    if api is _GEMINI:
        # Gemini streams by method name; `alt=sse` picks SSE framing (the only framing we serve).
        return path.endswith(":streamGenerateContent")
    return bool(body.get("stream"))


def _model(path: str, body: wire.Json) -> str:
    if ":" in path:
        return path.rsplit("/", 1)[-1].split(":", 1)[0]
    return str(body.get("model") or "fake-model")


def _sse(frames: list[bytes]) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    return StreamingResponse(chunks(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _not_found(path: str) -> Response:
    return JSONResponse({"error": {"message": f"fake provider: no route for {path}"}}, 404)
