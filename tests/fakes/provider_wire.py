"""Response bodies and SSE events for each wire API the fake provider speaks.

Each API has: the tools a request offers, whether it already carries a tool result, a JSON reply
and a list of SSE frames. A reply without a tool call carries `text`: the final text by default,
or an edit written out in text for tool-less clients (aider). Shapes follow what the real CLIs were
measured to accept (see /work/shared/reference/agent-clis.md sections 1.4, 2.4, 3.4, 4.4, 5.1 and 11).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fakes.provider_script import FINAL_TEXT, OfferedTool, ToolCall

Json = dict[str, Any]
TEXT_DELTA_CHARS = 64 * 1024
"""Longest text delta of a streamed Anthropic answer: a huge answer arrives in many deltas, as from a
real model, rather than as one SSE line no client or gateway meets in practice."""


@dataclass(frozen=True)
class Usage:
    """Token counts per response; `input` excludes cached tokens (APIs that include them add them)."""

    input: int = 1111
    output: int = 22
    cache_read: int = 333
    cache_write: int = 44
    reasoning: int = 7


def sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _items(value: object) -> list[Json]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- Anthropic Messages -------------------------------------------------------------------------


def anthropic_offered(body: Json) -> list[OfferedTool]:
    return [OfferedTool(str(tool.get("name"))) for tool in _items(body.get("tools"))]


def anthropic_has_tool_result(body: Json) -> bool:
    blocks = (block for message in _items(body.get("messages")) for block in _items(message.get("content")))
    return any(block.get("type") == "tool_result" for block in blocks)


def _anthropic_usage(usage: Usage, output: int) -> Json:
    return {
        "input_tokens": usage.input,
        "output_tokens": output,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
    }


def _anthropic_block(call: ToolCall | None, text: str) -> Json:
    if call is None:
        return {"type": "text", "text": text}
    return {"type": "tool_use", "id": "toolu_fake1", "name": call.name, "input": call.arguments}


def anthropic_json(model: str, call: ToolCall | None, usage: Usage, text: str = FINAL_TEXT) -> Json:
    return {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_anthropic_block(call, text)],
        "stop_reason": "end_turn" if call is None else "tool_use",
        "stop_sequence": None,
        "usage": _anthropic_usage(usage, usage.output),
    }


def anthropic_stream(model: str, call: ToolCall | None, usage: Usage, text: str = FINAL_TEXT) -> list[bytes]:
    message = anthropic_json(model, call, usage, text) | {"content": [], "stop_reason": None}
    message["usage"] = _anthropic_usage(usage, 1)
    if call is None:
        start: Json = {"type": "text", "text": ""}
        pieces = [text[at : at + TEXT_DELTA_CHARS] for at in range(0, len(text), TEXT_DELTA_CHARS)]
        deltas: list[Json] = [{"type": "text_delta", "text": piece} for piece in pieces or [""]]
    else:
        start = {"type": "tool_use", "id": "toolu_fake1", "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": call.arguments_json()}]
    stop_reason = "end_turn" if call is None else "tool_use"
    return [
        sse({"type": "message_start", "message": message}, "message_start"),
        sse({"type": "content_block_start", "index": 0, "content_block": start}, "content_block_start"),
        *(
            sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
            for delta in deltas
        ),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage.output},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]


# --- OpenAI Responses ---------------------------------------------------------------------------


def _namespaced_tools(body: Json) -> list[Json]:
    """Tools Codex declares in an `additional_tools` input item (code mode), flattened out of namespaces."""
    declared = (
        tool
        for item in _items(body.get("input"))
        if item.get("type") == "additional_tools"
        for tool in _items(item.get("tools"))
    )
    return [inner for tool in declared for inner in _items(tool.get("tools")) or [tool]]


def responses_offered(body: Json) -> list[OfferedTool]:
    tools = _items(body.get("tools")) + _namespaced_tools(body)
    return [OfferedTool(str(tool.get("name")), custom=tool.get("type") == "custom") for tool in tools]


def responses_has_tool_result(body: Json) -> bool:
    kinds = {"function_call_output", "custom_tool_call_output"}
    return any(item.get("type") in kinds for item in _items(body.get("input")))


def _responses_item(call: ToolCall | None, text: str) -> Json:
    if call is None:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        return {
            "type": "message",
            "id": "msg_fake1",
            "role": "assistant",
            "status": "completed",
            "content": content,
        }
    if call.custom:
        return {
            "type": "custom_tool_call",
            "id": "ctc_fake1",
            "call_id": "call_fake1",
            "name": call.name,
            "input": call.arguments_json(),
            "status": "completed",
        }
    return {
        "type": "function_call",
        "id": "fc_fake1",
        "call_id": "call_fake1",
        "name": call.name,
        "arguments": call.arguments_json(),
        "status": "completed",
    }


def _responses_usage(usage: Usage) -> Json:
    prompt = usage.input + usage.cache_read  # the Responses API counts cached tokens inside input_tokens
    output = usage.output + usage.reasoning
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": prompt + output,
    }


def _response(model: str, status: str, output: list[Json], usage: Json | None) -> Json:
    return {
        "id": "resp_fake1",
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": status,
        "output": output,
        "usage": usage,
    }


def responses_json(model: str, call: ToolCall | None, usage: Usage, text: str = FINAL_TEXT) -> Json:
    return _response(model, "completed", [_responses_item(call, text)], _responses_usage(usage))


def responses_stream(model: str, call: ToolCall | None, usage: Usage, text: str = FINAL_TEXT) -> list[bytes]:
    item = _responses_item(call, text)
    pending = item | {"status": "in_progress"}
    completed = responses_json(model, call, usage, text)
    events: list[tuple[str, Json]] = [
        ("response.created", {"response": _response(model, "in_progress", [], None)}),
        ("response.output_item.added", {"output_index": 0, "item": pending}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": completed}),
    ]
    if call is None:
        delta = {"output_index": 0, "item_id": item["id"], "content_index": 0, "delta": text}
        events.insert(2, ("response.output_text.delta", delta))
    return [sse({"type": kind, "sequence_number": n} | data, kind) for n, (kind, data) in enumerate(events)]


# --- OpenAI Chat Completions --------------------------------------------------------------------


def chat_offered(body: Json) -> list[OfferedTool]:
    functions = (tool.get("function") for tool in _items(body.get("tools")))
    return [OfferedTool(str(function.get("name"))) for function in functions if isinstance(function, dict)]


def chat_has_tool_result(body: Json) -> bool:
    return any(message.get("role") == "tool" for message in _items(body.get("messages")))


def _chat_usage(usage: Usage) -> Json:
    prompt = usage.input + usage.cache_read
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
    }


def _chat_tool_calls(call: ToolCall) -> list[Json]:
    function = {"name": call.name, "arguments": call.arguments_json()}
    return [{"index": 0, "id": "call_fake1", "type": "function", "function": function}]


def _chat_message(call: ToolCall | None, text: str) -> Json:
    if call is None:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": None, "tool_calls": _chat_tool_calls(call)}


def _finish(call: ToolCall | None) -> str:
    return "stop" if call is None else "tool_calls"


def chat_json(model: str, call: ToolCall | None, usage: Usage, text: str = FINAL_TEXT) -> Json:
    message = _chat_message(call, text)
    choice = {"index": 0, "message": message, "finish_reason": _finish(call), "logprobs": None}
    return {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": _chat_usage(usage),
    }


def chat_stream(
    model: str, call: ToolCall | None, usage: Usage, include_usage: bool, text: str = FINAL_TEXT
) -> list[bytes]:
    def chunk(choices: list[Json], usage_field: Json | None = None) -> bytes:
        body = {"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 0, "model": model}
        return sse(body | {"choices": choices} | ({"usage": usage_field} if usage_field else {}))

    delta = _chat_message(call, text)
    frames = [
        chunk([{"index": 0, "delta": delta, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": _finish(call)}]),
    ]
    if include_usage:
        # OpenAI sends usage in one extra chunk with empty choices, only when the client asks.
        frames.append(chunk([], _chat_usage(usage)))
    return [*frames, b"data: [DONE]\n\n"]


# --- Gemini generateContent ---------------------------------------------------------------------


def gemini_offered(body: Json) -> list[OfferedTool]:
    declarations = (
        decl for tool in _items(body.get("tools")) for decl in _items(tool.get("functionDeclarations"))
    )
    return [OfferedTool(str(decl.get("name"))) for decl in declarations]


def gemini_has_tool_result(body: Json) -> bool:
    parts = (part for content in _items(body.get("contents")) for part in _items(content.get("parts")))
    return any("functionResponse" in part for part in parts)


def _schema_value(schema: Json) -> object:
    """A value valid for a simple JSON schema; Gemini CLI rejects a router score below `minimum`."""
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {key: _schema_value(sub) for key, sub in properties.items() if isinstance(sub, dict)}
    if kind in ("integer", "number"):
        return max(1, int(schema.get("minimum", 1)))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    return "fake"


def gemini_json_schema(body: Json) -> Json | None:
    """The schema of a structured-output side call (router, next-speaker), if this is one."""
    config = body.get("generationConfig")
    if not isinstance(config, dict) or config.get("responseMimeType") != "application/json":
        return None
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
    return schema if isinstance(schema, dict) else {}


def _gemini_part(call: ToolCall | None, schema: Json | None, text: str) -> Json:
    if schema is not None:
        return {"text": json.dumps(_schema_value(schema))}
    if call is None:
        return {"text": text}
    return {"functionCall": {"name": call.name, "args": call.arguments}}


def gemini_json(
    model: str, call: ToolCall | None, usage: Usage, schema: Json | None = None, text: str = FINAL_TEXT
) -> Json:
    prompt = usage.input + usage.cache_read  # promptTokenCount includes the cached part
    candidate = {
        "content": {"role": "model", "parts": [_gemini_part(call, schema, text)]},
        "finishReason": "STOP",
        "index": 0,
    }
    metadata = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": usage.output,
        "cachedContentTokenCount": usage.cache_read,
        "thoughtsTokenCount": usage.reasoning,
        "totalTokenCount": prompt + usage.output + usage.reasoning,
    }
    return {"candidates": [candidate], "usageMetadata": metadata, "modelVersion": model}


def gemini_stream(
    model: str, call: ToolCall | None, usage: Usage, schema: Json | None = None, text: str = FINAL_TEXT
) -> list[bytes]:
    return [sse(gemini_json(model, call, usage, schema, text))]
