"""A scripted fake model provider: a real HTTP server speaking the Anthropic, OpenAI and Gemini wire APIs.

It runs uvicorn in a background thread with its own event loop, so sync and async tests alike can
use it and a hung request never blocks the test's loop. Any path prefix is accepted (`/v1`,
`/v1beta`, none) because clients differ; the API is chosen by the path's ending.

    with FakeProvider() as fake:
        ...  # point a client at fake.base_url; inspect fake.requests afterwards

Failure tests: `fail_next(status)` answers with an error; `set_mode(mode, count)` breaks the next
replies (modes below); `mode = ...` sets the standing mode for every request.

* `hang`: accept the request, answer nothing until the server stops.
* `slow_first_byte`: answer after `first_byte_delay_s`.
* `truncated`, `malformed_sse`, `stall`: break streamed replies (see provider_streams).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, cast, get_args
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import provider_text as convo
from tests.fakes import provider_wire as wire
from tests.fakes.provider_aider import aider_reply
from tests.fakes.provider_errors import Failure, Family, error_body, error_headers
from tests.fakes.provider_script import FINAL_TEXT, OfferedTool, ToolCall, next_tool_call
from tests.fakes.provider_streams import StreamMode, stream_response

Mode = Literal["normal", "hang", "slow_first_byte", "truncated", "malformed_sse", "stall"]
MODELS = ("claude-sonnet-4-5", "gpt-5.5", "gemini-2.5-pro", "grok-code-fast-1")
_STREAM_MODES = frozenset(get_args(StreamMode)) - {"normal"}
_POLL_S = 0.05
FIRST_BYTE_DELAY_S = 2.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was empty or not JSON

    @property
    def api_key(self) -> str | None:
        """The credential that reached the provider, from whichever header (or query) its API uses."""
        bearer = self.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            return bearer[len("bearer ") :]
        for name in ("x-api-key", "x-goog-api-key"):
            if name in self.headers:
                return self.headers[name]
        # Older Gemini clients pass the key as `?key=`.
        keys = parse_qs(self.query).get("key")
        return keys[0] if keys else None


@dataclass(frozen=True)
class _Api:
    """How one wire API reads a request and builds its reply."""

    family: Family
    offered: Callable[[wire.Json], list[OfferedTool]]
    has_tool_result: Callable[[wire.Json], bool]
    conversation: Callable[[wire.Json], convo.Conversation]


_ANTHROPIC = _Api(
    "anthropic", wire.anthropic_offered, wire.anthropic_has_tool_result, convo.anthropic_conversation
)
_RESPONSES = _Api(
    "openai", wire.responses_offered, wire.responses_has_tool_result, convo.responses_conversation
)
_CHAT = _Api("openai", wire.chat_offered, wire.chat_has_tool_result, convo.chat_conversation)
_GEMINI = _Api("gemini", wire.gemini_offered, wire.gemini_has_tool_result, convo.gemini_conversation)


@dataclass
class FakeProvider:
    """The server. Set `mode`, call `fail_next` or `set_mode`, change `usage` at any time from the test."""

    usage: wire.Usage = field(default_factory=wire.Usage)
    mode: Mode = "normal"  # the standing mode; `set_mode` overrides it for a number of requests
    first_byte_delay_s: float = FIRST_BYTE_DELAY_S  # how long `slow_first_byte` waits before answering
    final_text: str = FINAL_TEXT  # the last turn's text, to clients that call tools
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: list[Failure] = field(default_factory=list)
    _modes: list[Mode] = field(default_factory=list)
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

    def set_mode(self, mode: Mode, count: int | None = 1) -> None:
        """The next `count` model requests that `mode` applies to get it, then the standing mode again.

        `count=None` changes the standing mode instead (as assigning `mode` does). The stream modes
        (`truncated`, `malformed_sse`, `stall`) apply only to streamed replies: a JSON or count_tokens
        request leaves them queued for the next stream. Queued failures (`fail_next`) are served first.
        """
        if count is None:
            self.mode = mode
        else:
            self._modes.extend(mode for _ in range(count))

    def reset(self) -> None:
        """Back to defaults between tests that share one server (does not release hung requests)."""
        self.usage, self.mode, self.first_byte_delay_s = wire.Usage(), "normal", FIRST_BYTE_DELAY_S
        self.final_text = FINAL_TEXT
        self._failures.clear()
        self._modes.clear()
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
        body = body if isinstance(body, dict) else {}
        if self.mode == "hang":  # a standing hang holds even queued failures back
            return await self._hang()
        if self._failures:
            failure = self._failures.pop(0)
            return JSONResponse(
                error_body(api.family, failure), failure.status, headers=error_headers(api.family, failure)
            )
        mode = self._take_mode(streaming=_wants_stream(api, path, body))
        if mode == "hang":
            return await self._hang()
        if mode == "slow_first_byte":
            await self._first_byte_delay()
        return self._reply(api, path, body, mode)

    def _take_mode(self, streaming: bool) -> Mode:
        """This request's mode: the next queued one if it applies here, else the standing one."""

        def applies(mode: Mode) -> bool:
            return streaming or mode not in _STREAM_MODES

        if self._modes and applies(self._modes[0]):
            return self._modes.pop(0)
        return self.mode if applies(self.mode) else "normal"

    async def _hang(self) -> Response:
        """Accepts the request and answers nothing until the server stops (client timeouts)."""
        # A worker thread waits on the threading.Event that stop() sets from the test's thread.
        await asyncio.to_thread(self._stopping.wait)
        return Response(status_code=503)

    async def _first_byte_delay(self) -> None:
        """Waits `first_byte_delay_s` before any byte of the reply, cut short when the server stops."""
        deadline = time.monotonic() + self.first_byte_delay_s
        # Polled: `_stopping` is a threading.Event set from the test's thread, not an asyncio one.
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, _POLL_S))

    def _reply(self, api: _Api, path: str, body: wire.Json, mode: Mode) -> Response:
        if _counts_tokens(path):
            total = self.usage.input + self.usage.cache_read
            return JSONResponse({"input_tokens": total} if api is _ANTHROPIC else {"totalTokens": total})
        offered = api.offered(body)
        call = next_tool_call(offered, api.has_tool_result(body), body)
        # Tool-less clients: aider wants its edit in the text on its first turn; the rest get final text.
        reply = self.final_text if offered else aider_reply(api.conversation(body)) or FINAL_TEXT
        model = _model(path, body)
        if not _wants_stream(api, path, body):
            # The Responses API is streamed by every client we drive; JSON is kept for completeness.
            return JSONResponse(self._json(api, model, call, reply, body))
        frames = self._frames(api, model, call, reply, body)
        stream_mode = cast(StreamMode, mode if mode in _STREAM_MODES else "normal")
        return stream_response(stream_mode, frames, api is _GEMINI, self._stopping)

    def _json(self, api: _Api, model: str, call: ToolCall | None, reply: str, body: wire.Json) -> wire.Json:
        if api is _ANTHROPIC:
            return wire.anthropic_json(model, call, self.usage, reply)
        if api is _RESPONSES:
            return wire.responses_json(model, call, self.usage, reply)
        if api is _CHAT:
            return wire.chat_json(model, call, self.usage, reply)
        return wire.gemini_json(model, call, self.usage, wire.gemini_json_schema(body), reply)

    def _frames(
        self, api: _Api, model: str, call: ToolCall | None, reply: str, body: wire.Json
    ) -> list[bytes]:
        if api is _ANTHROPIC:
            return wire.anthropic_stream(model, call, self.usage, reply)
        if api is _RESPONSES:
            return wire.responses_stream(model, call, self.usage, reply)
        if api is _CHAT:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return wire.chat_stream(model, call, self.usage, include_usage, reply)
        return wire.gemini_stream(model, call, self.usage, wire.gemini_json_schema(body), reply)

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


def _counts_tokens(path: str) -> bool:
    return path.endswith(("/count_tokens", ":countTokens"))


def _wants_stream(api: _Api, path: str, body: wire.Json) -> bool:
    if _counts_tokens(path):
        return False
    if api is _GEMINI:
        # Gemini streams by method name; `alt=sse` picks SSE framing (the only framing we serve).
        return path.endswith(":streamGenerateContent")
    return bool(body.get("stream"))


def _model(path: str, body: wire.Json) -> str:
    if ":" in path:
        return path.rsplit("/", 1)[-1].split(":", 1)[0]
    return str(body.get("model") or "fake-model")


def _not_found(path: str) -> Response:
    return JSONResponse({"error": {"message": f"fake provider: no route for {path}"}}, 404)
