"""The fake model provider over real HTTP: each wire API, both scripted turns, failures, the request log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.fakes.provider_script import FILE_CONTENT, FINAL_TEXT, OfferedTool, choose_tool_call
from tests.fakes.provider_wire import Usage

PATH = "/work/out/hello.txt"
PROMPT = f"Create the file FILE={PATH} please"
ANTHROPIC = "/v1/messages"
RESPONSES = "/v1/responses"
CHAT = "/v1/chat/completions"
GEMINI_JSON = "/v1beta/models/gemini-2.5-pro:generateContent"
GEMINI_SSE = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(shared: FakeProvider) -> FakeProvider:
    shared.reset()
    return shared


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5) as http:
        yield http


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) pairs from an SSE body."""
    events = []
    for frame in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "data" in lines:
            events.append((lines.get("event"), lines["data"]))
    return events


def sse_json(text: str) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data in sse_events(text) if data != "[DONE]"]


def post(client: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


# --- Anthropic Messages -------------------------------------------------------------------------


def anthropic_body(stream: bool, tool_result: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "environment block"},  # Claude Code sends one; must be tolerated
        {
            "role": "user",
            "content": [{"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}}],
        },
    ]
    if tool_result:
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_fake1"}]})
    tools = [{"name": "Read", "input_schema": {}}, {"name": "Write", "input_schema": {}}]
    return {"model": "claude-sonnet-4-5", "messages": messages, "tools": tools, "stream": stream}


def test_anthropic_json_turns(client: httpx.Client) -> None:
    first = post(client, ANTHROPIC, anthropic_body(stream=False)).json()
    assert first["stop_reason"] == "tool_use"
    assert first["content"][0]["name"] == "Write"
    assert first["content"][0]["input"] == {"file_path": PATH, "content": FILE_CONTENT}
    assert first["usage"] == {
        "input_tokens": 1111,
        "output_tokens": 22,
        "cache_creation_input_tokens": 44,
        "cache_read_input_tokens": 333,
    }
    second = post(client, ANTHROPIC, anthropic_body(stream=False, tool_result=True)).json()
    assert second["stop_reason"] == "end_turn"
    assert second["content"] == [{"type": "text", "text": FINAL_TEXT}]


def test_anthropic_stream_tool_turn(client: httpx.Client) -> None:
    response = post(client, f"{ANTHROPIC}?beta=true", anthropic_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(payload) for _, payload in events]
    assert data[0]["message"]["usage"]["cache_read_input_tokens"] == 333
    assert data[1]["content_block"]["name"] == "Write"
    assert json.loads(data[2]["delta"]["partial_json"]) == {"file_path": PATH, "content": FILE_CONTENT}
    assert data[4]["delta"]["stop_reason"] == "tool_use"
    assert data[4]["usage"] == {"output_tokens": 22}


def test_anthropic_stream_final_turn(client: httpx.Client) -> None:
    data = sse_json(post(client, ANTHROPIC, anthropic_body(stream=True, tool_result=True)).text)
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert data[2]["delta"] == {"type": "text_delta", "text": FINAL_TEXT}
    assert data[4]["delta"]["stop_reason"] == "end_turn"


# --- OpenAI Responses ---------------------------------------------------------------------------


def responses_body(stream: bool, tool_result: bool = False) -> dict[str, Any]:
    tools = [
        {"type": "function", "name": "exec_command", "parameters": {}},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    ]
    items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": PROMPT}]
    if tool_result:
        items.append({"type": "custom_tool_call_output", "call_id": "call_fake1", "output": "ok"})
    return {"model": "gpt-5.5", "stream": stream, "input": items, "tools": tools}


def test_responses_stream_tool_turn(client: httpx.Client) -> None:
    data = sse_json(post(client, RESPONSES, responses_body(stream=True)).text)
    kinds = [event["type"] for event in data]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    item = data[2]["item"]
    assert item["type"] == "custom_tool_call"
    assert item["name"] == "apply_patch"
    assert f"*** Add File: {PATH}\n+hello from fake llm\n" in item["input"]
    assert data[3]["response"]["usage"] == {
        "input_tokens": 1444,
        "input_tokens_details": {"cached_tokens": 333},
        "output_tokens": 29,
        "output_tokens_details": {"reasoning_tokens": 7},
        "total_tokens": 1473,
    }


def test_responses_stream_final_turn(client: httpx.Client) -> None:
    data = sse_json(post(client, RESPONSES, responses_body(stream=True, tool_result=True)).text)
    assert data[-1]["type"] == "response.completed"
    done = next(event for event in data if event["type"] == "response.output_item.done")
    assert done["item"]["content"][0]["text"] == FINAL_TEXT


def test_responses_json_turns(client: httpx.Client) -> None:
    body = responses_body(stream=False)
    body["tools"] = [{"type": "function", "name": "write_file", "parameters": {}}]
    first = post(client, RESPONSES, body).json()
    assert first["output"][0]["type"] == "function_call"
    assert json.loads(first["output"][0]["arguments"]) == {"file_path": PATH, "content": FILE_CONTENT}
    body["input"].append({"type": "function_call_output", "call_id": "call_fake1", "output": "ok"})
    second = post(client, RESPONSES, body).json()
    assert second["output"][0]["content"][0]["text"] == FINAL_TEXT
    assert second["usage"]["input_tokens"] == 1444


# --- OpenAI Chat Completions --------------------------------------------------------------------


def chat_body(stream: bool, tool_result: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
    if tool_result:
        messages.append({"role": "tool", "tool_call_id": "call_fake1", "content": "ok"})
    tools = [
        {"type": "function", "function": {"name": name}} for name in ("view_file", "create_file", "bash")
    ]
    return {"model": "grok-code-fast-1", "messages": messages, "tools": tools, "stream": stream}


def test_chat_json_turns(client: httpx.Client) -> None:
    first = post(client, CHAT, chat_body(stream=False)).json()
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    function = choice["message"]["tool_calls"][0]["function"]
    assert function["name"] == "create_file"
    assert json.loads(function["arguments"]) == {"path": PATH, "content": FILE_CONTENT}
    assert first["usage"]["prompt_tokens"] == 1444
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 333}
    second = post(client, CHAT, chat_body(stream=False, tool_result=True)).json()
    assert second["choices"][0]["message"]["content"] == FINAL_TEXT
    assert second["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_with_usage(client: httpx.Client) -> None:
    body = chat_body(stream=True) | {"stream_options": {"include_usage": True}}
    response = post(client, CHAT, body)
    assert response.text.endswith("data: [DONE]\n\n")
    data = sse_json(response.text)
    assert data[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "create_file"
    assert data[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert data[-1]["choices"] == []
    assert data[-1]["usage"]["completion_tokens"] == 22


def test_chat_stream_final_turn_without_usage(client: httpx.Client) -> None:
    data = sse_json(post(client, CHAT, chat_body(stream=True, tool_result=True)).text)
    assert data[0]["choices"][0]["delta"]["content"] == FINAL_TEXT
    assert all("usage" not in chunk for chunk in data)


def test_chat_without_tools_answers_text(client: httpx.Client) -> None:
    body = {"model": "gpt-5.5", "messages": [{"role": "user", "content": PROMPT}]}
    assert post(client, CHAT, body).json()["choices"][0]["message"]["content"] == FINAL_TEXT


# --- Gemini -------------------------------------------------------------------------------------


def gemini_body(tool_result: bool = False) -> dict[str, Any]:
    contents: list[dict[str, Any]] = [{"role": "user", "parts": [{"text": PROMPT}]}]
    if tool_result:
        response = {"functionResponse": {"name": "write_file", "response": {"output": "ok"}}}
        contents.append({"role": "user", "parts": [response]})
    declarations = [{"name": "read_file"}, {"name": "write_file"}, {"name": "run_shell_command"}]
    return {"contents": contents, "tools": [{"functionDeclarations": declarations}]}


def test_gemini_json_turns(client: httpx.Client) -> None:
    first = post(client, GEMINI_JSON, gemini_body()).json()
    part = first["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"] == {
        "name": "write_file",
        "args": {"file_path": PATH, "content": FILE_CONTENT},
    }
    assert first["usageMetadata"] == {
        "promptTokenCount": 1444,
        "candidatesTokenCount": 22,
        "cachedContentTokenCount": 333,
        "thoughtsTokenCount": 7,
        "totalTokenCount": 1473,
    }
    assert first["modelVersion"] == "gemini-2.5-pro"
    second = post(client, GEMINI_JSON, gemini_body(tool_result=True)).json()
    assert second["candidates"][0]["content"]["parts"] == [{"text": FINAL_TEXT}]


def test_gemini_stream_turns(client: httpx.Client) -> None:
    first = sse_json(post(client, GEMINI_SSE, gemini_body()).text)
    assert first[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "write_file"
    assert first[0]["usageMetadata"]["promptTokenCount"] == 1444
    second = sse_json(post(client, GEMINI_SSE, gemini_body(tool_result=True)).text)
    assert second[-1]["candidates"][0]["content"]["parts"] == [{"text": FINAL_TEXT}]


def test_gemini_json_schema_side_call(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"complexity_reasoning": {"type": "string"}, "complexity_score": {"type": "integer"}},
    }
    body = gemini_body() | {
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}
    }
    reply = post(client, "/v1beta/models/gemini-3.5-flash-lite:generateContent", body).json()
    text = reply["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"complexity_reasoning": "fake", "complexity_score": 1}


# --- listing, usage, tool choice ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/models", "/v1beta/models", "/models"])
def test_models_listing(client: httpx.Client, path: str) -> None:
    body = client.get(path).json()
    assert "gpt-5.5" in [model["id"] for model in body["data"]]
    assert "models/gemini-2.5-pro" in [model["name"] for model in body["models"]]


def test_usage_is_configurable(fake: FakeProvider, client: httpx.Client) -> None:
    fake.usage = Usage(input=10, output=2, cache_read=3, cache_write=4, reasoning=0)
    usage = post(client, ANTHROPIC, anthropic_body(stream=False)).json()["usage"]
    assert usage == {
        "input_tokens": 10,
        "output_tokens": 2,
        "cache_creation_input_tokens": 4,
        "cache_read_input_tokens": 3,
    }


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("bash", "command", f"printf '%s' 'hello from fake llm\n' > {PATH}"),
        ("exec_command", "cmd", f"printf '%s' 'hello from fake llm\n' > {PATH}"),
    ],
)
def test_shell_tool_is_the_fallback(name: str, key: str, expected: str) -> None:
    call = choose_tool_call([OfferedTool("read_file"), OfferedTool(name)], PATH)
    assert call is not None
    assert call.name == name
    assert isinstance(call.arguments, dict)
    assert call.arguments[key] == expected


def test_no_write_tool_offered_gives_no_call() -> None:
    assert choose_tool_call([OfferedTool("read_file")], PATH) is None


# --- failures -----------------------------------------------------------------------------------

REQUESTS = {
    "anthropic": (ANTHROPIC, anthropic_body(stream=True)),
    "openai": (RESPONSES, responses_body(stream=True)),
    "gemini": (GEMINI_SSE, gemini_body()),
}


def error_kind(family: str, body: dict[str, Any]) -> Any:
    if family == "anthropic":
        assert body["type"] == "error"
        return body["error"]["type"]
    if family == "openai":
        return body["error"]["code"] or body["error"]["type"]
    return body["error"]["status"]


@pytest.mark.parametrize(
    ("family", "status", "kind"),
    [
        ("anthropic", 401, "authentication_error"),
        ("anthropic", 500, "api_error"),
        ("openai", 401, "invalid_api_key"),
        ("openai", 500, "server_error"),
        ("gemini", 401, "UNAUTHENTICATED"),
        ("gemini", 500, "INTERNAL"),
    ],
)
def test_error_shapes(fake: FakeProvider, client: httpx.Client, family: str, status: int, kind: str) -> None:
    path, body = REQUESTS[family]
    fake.fail_next(status)
    failed = client.post(path, json=body)
    assert failed.status_code == status
    assert error_kind(family, failed.json()) == kind
    assert "retry-after" not in failed.headers
    assert client.post(path, json=body).status_code == 200  # one failure, then normal service


def test_rate_limit_anthropic(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(429, retry_after_s=7)
    failed = client.post(ANTHROPIC, json=anthropic_body(stream=True))
    assert failed.status_code == 429
    assert failed.json()["error"]["type"] == "rate_limit_error"
    assert failed.headers["retry-after"] == "7"
    assert failed.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert failed.headers["anthropic-ratelimit-requests-reset"].endswith("Z")


def test_rate_limit_openai(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(429, retry_after_s=2, count=2)
    for _ in range(2):
        failed = client.post(CHAT, json=chat_body(stream=False))
        assert failed.status_code == 429
        assert failed.json()["error"]["code"] == "rate_limit_exceeded"
        assert failed.headers["x-ratelimit-reset-requests"] == "2s"
        assert failed.headers["retry-after"] == "2"
    assert client.post(CHAT, json=chat_body(stream=False)).status_code == 200


def test_rate_limit_gemini(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(429, retry_after_s=3)
    failed = client.post(GEMINI_SSE, json=gemini_body())
    assert failed.status_code == 429
    error = failed.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["retryDelay"] == "3s"
    assert failed.headers["retry-after"] == "3"


def test_malformed_sse(fake: FakeProvider, client: httpx.Client) -> None:
    fake.mode = "malformed_sse"
    response = post(client, ANTHROPIC, anthropic_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "message_stop" not in response.text
    _, data = sse_events(response.text)[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    fake.mode = "normal"
    assert post(client, CHAT, chat_body(stream=False)).json()["choices"]  # JSON replies are unaffected


def test_hang_until_client_timeout_and_stop_releases_it() -> None:
    fake = FakeProvider().start()
    try:
        fake.mode = "hang"
        with httpx.Client(base_url=fake.base_url, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
            http.post(RESPONSES, json=responses_body(stream=True))
        assert len(fake.requests) == 1  # the request was accepted and read before hanging
    finally:
        started = time.monotonic()
        fake.stop()
    assert time.monotonic() - started < 2


# --- request log --------------------------------------------------------------------------------


def test_request_log(fake: FakeProvider, client: httpx.Client) -> None:
    post(client, f"{ANTHROPIC}?beta=true", anthropic_body(stream=True), **{"x-api-key": "sk-ant-real"})
    post(client, RESPONSES, responses_body(stream=True), authorization="Bearer sk-openai-real")
    post(client, GEMINI_SSE, gemini_body(), **{"x-goog-api-key": "goog-real"})
    client.get("/v1/models")
    logged = fake.requests
    assert [(entry.method, entry.path) for entry in logged] == [
        ("POST", ANTHROPIC),
        ("POST", RESPONSES),
        ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
        ("GET", "/v1/models"),
    ]
    assert logged[0].query == "beta=true"
    assert logged[0].headers["x-api-key"] == "sk-ant-real"
    assert logged[1].headers["authorization"] == "Bearer sk-openai-real"
    assert logged[2].headers["x-goog-api-key"] == "goog-real"
    assert logged[2].query == "alt=sse"
    assert logged[0].body["model"] == "claude-sonnet-4-5"
    assert logged[3].body is None


def test_responses_code_mode_writes_javascript(client: httpx.Client) -> None:
    namespace = {"type": "namespace", "name": "functions", "tools": [{"type": "custom", "name": "exec"}]}
    body = responses_body(stream=True) | {"tools": None}
    body["input"].insert(0, {"type": "additional_tools", "role": "developer", "tools": [namespace]})
    item = sse_json(post(client, RESPONSES, body).text)[2]["item"]
    assert (item["type"], item["name"]) == ("custom_tool_call", "exec")
    assert item["input"].startswith('const r = await tools.apply_patch("*** Begin Patch\\n*** Add File: ')
