"""What the fake provider's own tests send and how they read the answers: request bodies in each wire
API's shape, and SSE parsing. Shared by tests/integration/test_fake_provider*.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

PATH = "/work/out/hello.txt"
PROMPT = f"Create the file FILE={PATH} please"
ANTHROPIC = "/v1/messages"
RESPONSES = "/v1/responses"
CHAT = "/v1/chat/completions"
GEMINI_JSON = "/v1beta/models/gemini-2.5-pro:generateContent"
GEMINI_SSE = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


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


def responses_body(stream: bool, tool_result: bool = False) -> dict[str, Any]:
    tools = [
        {"type": "function", "name": "exec_command", "parameters": {}},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    ]
    items: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": PROMPT}]
    if tool_result:
        items.append({"type": "custom_tool_call_output", "call_id": "call_fake1", "output": "ok"})
    return {"model": "gpt-5.5", "stream": stream, "input": items, "tools": tools}


def chat_body(stream: bool, tool_result: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
    if tool_result:
        messages.append({"role": "tool", "tool_call_id": "call_fake1", "content": "ok"})
    tools = [
        {"type": "function", "function": {"name": name}} for name in ("view_file", "create_file", "bash")
    ]
    return {"model": "grok-code-fast-1", "messages": messages, "tools": tools, "stream": stream}


def gemini_body(tool_result: bool = False) -> dict[str, Any]:
    contents: list[dict[str, Any]] = [{"role": "user", "parts": [{"text": PROMPT}]}]
    if tool_result:
        response = {"functionResponse": {"name": "write_file", "response": {"output": "ok"}}}
        contents.append({"role": "user", "parts": [response]})
    declarations = [{"name": "read_file"}, {"name": "write_file"}, {"name": "run_shell_command"}]
    return {"contents": contents, "tools": [{"functionDeclarations": declarations}]}


# One streamed request per wire API, keyed by a short name used in parametrized test ids.
STREAMED = {
    "anthropic": (ANTHROPIC, anthropic_body(stream=True)),
    "responses": (RESPONSES, responses_body(stream=True)),
    "chat": (CHAT, chat_body(stream=True)),
    "gemini": (GEMINI_SSE, gemini_body()),
}
