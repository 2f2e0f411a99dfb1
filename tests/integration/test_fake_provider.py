"""The fake model provider over real HTTP: each wire API, both scripted turns, failures, the request log."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.fakes.provider_client import (
    ANTHROPIC,
    CHAT,
    GEMINI_JSON,
    GEMINI_SSE,
    PATH,
    PROMPT,
    RESPONSES,
    anthropic_body,
    chat_body,
    gemini_body,
    post,
    responses_body,
    sse_events,
    sse_json,
)
from tests.fakes.provider_script import FILE_CONTENT, FINAL_TEXT, OfferedTool, choose_tool_call
from tests.fakes.provider_wire import TEXT_DELTA_CHARS, Usage

# --- Anthropic Messages -------------------------------------------------------------------------


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


def test_a_long_anthropic_answer_streams_in_many_deltas(fake: FakeProvider, client: httpx.Client) -> None:
    fake.final_text = "0123456789" * (TEXT_DELTA_CHARS // 4)  # two and a half deltas long
    data = sse_json(post(client, ANTHROPIC, anthropic_body(stream=True, tool_result=True)).text)
    deltas = [event["delta"]["text"] for event in data if event["type"] == "content_block_delta"]
    assert [len(delta) for delta in deltas] == [TEXT_DELTA_CHARS, TEXT_DELTA_CHARS, TEXT_DELTA_CHARS // 2]
    assert "".join(deltas) == fake.final_text


# --- OpenAI Responses ---------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("path", "headers", "key"),
    [
        (ANTHROPIC, {"x-api-key": "sk-ant-1"}, "sk-ant-1"),
        (CHAT, {"authorization": "Bearer sk-openai-1"}, "sk-openai-1"),
        (GEMINI_SSE, {"x-goog-api-key": "goog-1"}, "goog-1"),
        (f"{GEMINI_SSE}&key=goog-query", {}, "goog-query"),
        (CHAT, {}, None),
    ],
)
def test_request_log_names_the_api_key(
    fake: FakeProvider, client: httpx.Client, path: str, headers: dict[str, str], key: str | None
) -> None:
    """Each API carries its key in its own header (Gemini's older clients in the query)."""
    client.post(path, json={"model": "m", "messages": [], "stream": True}, headers=headers)
    assert fake.requests[-1].api_key == key


def test_responses_code_mode_writes_javascript(client: httpx.Client) -> None:
    namespace = {"type": "namespace", "name": "functions", "tools": [{"type": "custom", "name": "exec"}]}
    body = responses_body(stream=True) | {"tools": None}
    body["input"].insert(0, {"type": "additional_tools", "role": "developer", "tools": [namespace]})
    item = sse_json(post(client, RESPONSES, body).text)[2]["item"]
    assert (item["type"], item["name"]) == ("custom_tool_call", "exec")
    assert item["input"].startswith('const r = await tools.apply_patch("*** Begin Patch\\n*** Add File: ')
