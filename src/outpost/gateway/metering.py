"""Token usage read from a provider's own response, as the gateway forwards it: no I/O, bounded memory.

The gateway passes the response bytes through unchanged and feeds a copy to a `UsageMeter`. Streamed
replies are SSE; the meter parses them line by line and keeps only the latest usage it saw, so memory
stays bounded however long the stream or whatever the upstream sends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from outpost.agents.events import Usage, as_int

WireApi = Literal["anthropic_messages", "openai_responses", "chat_completions", "gemini"]

_EOL = re.compile(rb"\r\n|\r|\n")
_TYPE = re.compile(rb'"type"\s*:\s*"([A-Za-z._]{1,64})"')
HEAD_BYTES = 512
TAIL_BYTES = 64 << 10
"""Of an event too big to parse, what is kept: its start (where its type is) and its end (where a
provider puts the usage of a whole reply), so a huge answer is still billed."""
_BOM = b"\xef\xbb\xbf"
# Terminal Responses events; earlier ones carry `usage: null` or a running figure we must not bill.
_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Anthropic's usage keys and ours; `message_delta` repeats only some of them, cumulatively.
_ANTHROPIC_KEYS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


def wire_api_for(path: str) -> WireApi | None:
    """The wire API a request path (after the provider prefix) speaks, or None when it is not metered."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/messages"):
        return "anthropic_messages"
    if path.endswith("/responses"):
        return "openai_responses"
    if path.endswith("/chat/completions"):
        return "chat_completions"
    if path.endswith((":generateContent", ":streamGenerateContent")):
        return "gemini"
    return None  # count_tokens, countTokens, model lists and anything unknown cost nothing


@dataclass(frozen=True, slots=True)
class MeteredCall:
    """One model call's usage as the provider reported it, and the model it says answered."""

    model: str | None
    usage: Usage


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _minus(total: int, *parts: int) -> int:
    """Uncached input from an inclusive count; a hostile upstream must not make it negative."""
    return max(0, total - sum(parts))


def _anthropic_usage(raw: dict[str, Any], base: Usage | None = None) -> Usage:
    """Fields present in `raw` replace those of `base`: `message_delta` counts are cumulative."""
    present = {ours: as_int(raw[theirs]) for theirs, ours in _ANTHROPIC_KEYS if raw.get(theirs) is not None}
    return replace(base or Usage(), **present)


def _responses_usage(raw: dict[str, Any]) -> Usage:
    # input_tokens includes cached reads and (where reported, e.g. OpenRouter) cache writes.
    details = _dict(raw.get("input_tokens_details"))
    read, write = as_int(details.get("cached_tokens")), as_int(details.get("cache_write_tokens"))
    prompt = as_int(raw.get("input_tokens"))
    return Usage(_minus(prompt, read, write), as_int(raw.get("output_tokens")), read, write)


def _chat_usage(raw: dict[str, Any]) -> Usage:
    details = _dict(raw.get("prompt_tokens_details"))
    # DeepSeek reports cache hits at the top level; when both are sent they agree.
    read = max(as_int(details.get("cached_tokens")), as_int(raw.get("prompt_cache_hit_tokens")))
    write = as_int(details.get("cache_write_tokens"))
    prompt = as_int(raw.get("prompt_tokens"))
    return Usage(_minus(prompt, read, write), as_int(raw.get("completion_tokens")), read, write)


def _gemini_usage(raw: dict[str, Any]) -> Usage:
    read = as_int(raw.get("cachedContentTokenCount"))
    # Tool-use prompt tokens sit outside promptTokenCount but are billed as input.
    prompt = as_int(raw.get("promptTokenCount")) + as_int(raw.get("toolUsePromptTokenCount"))
    output = as_int(raw.get("candidatesTokenCount")) + as_int(raw.get("thoughtsTokenCount"))
    return Usage(_minus(prompt, read), output, read, 0)


def _json(raw: bytes | bytearray | memoryview) -> object:
    """Parsed JSON, or None for anything else (garbage, bad UTF-8, hostile nesting)."""
    try:
        return orjson.loads(raw)
    except (ValueError, RecursionError):  # orjson refuses deep nesting with a ValueError subclass
        return None


@dataclass(frozen=True, slots=True)
class _Overlong:
    """A line longer than the limit: only its first HEAD_BYTES and last TAIL_BYTES were kept."""

    head: bytes
    tail: bytes


class _Lines:
    """Splits chunks into SSE lines (ending in \\n, \\r\\n or \\r) holding at most `limit` bytes of one.

    A longer line is never buffered whole: it is reported as an `_Overlong` holding its ends only, so
    the event it belonged to is not read as if it were whole.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._partial = bytearray()
        self._skipping = False  # inside an overlong line: keep only its head and tail until it ends
        self._head = b""
        self._tail = bytearray()
        self._after_cr = False  # the last chunk ended in \r, so a \n opening the next one ends nothing

    def feed(self, chunk: bytes) -> list[bytes | _Overlong]:
        view, start = memoryview(chunk), 0
        lines: list[bytes | _Overlong] = []
        if self._after_cr and chunk[:1] == b"\n":
            start = 1
        for match in _EOL.finditer(chunk, start):
            self._take(view[start : match.start()])
            lines.append(self._line_read())
            start = match.end()
        self._take(view[start:])
        if chunk:
            self._after_cr = chunk.endswith(b"\r")
        return lines

    def _line_read(self) -> bytes | _Overlong:
        line = _Overlong(self._head, bytes(self._tail)) if self._skipping else bytes(self._partial)
        self._partial.clear()
        self._tail.clear()
        self._skipping = False
        return line

    def _take(self, piece: memoryview) -> None:
        if not self._skipping and len(self._partial) + len(piece) > self._limit:
            lacking = max(0, HEAD_BYTES - len(self._partial))  # the head may end inside this piece
            self._head = bytes(self._partial[:HEAD_BYTES]) + bytes(piece[:lacking])
            self._skipping = True
            self._tail += self._partial[-TAIL_BYTES:]
            self._partial.clear()
        if self._skipping:
            self._tail += piece[-TAIL_BYTES:]
            if len(self._tail) > 2 * TAIL_BYTES:
                del self._tail[:-TAIL_BYTES]
        else:
            self._partial += piece


class UsageMeter:
    """Reads one response's usage from its bytes. `feed` every chunk in order, then `finish` once."""

    def __init__(
        self,
        api: WireApi,
        *,
        streaming: bool,
        request_model: str | None,
        max_line_bytes: int = 1 << 20,
        max_body_bytes: int = 32 << 20,
    ) -> None:
        self._api: WireApi = api
        self._streaming = streaming
        self._request_model = request_model
        self._max_line_bytes = max_line_bytes
        self._max_body_bytes = max_body_bytes
        self._model: str | None = None
        self._usage: Usage | None = None
        # Non-streaming: the whole body, unless it outgrew max_body_bytes.
        self._body: bytearray | None = bytearray()
        # Streaming: the SSE event being read.
        self._lines = _Lines(max_line_bytes)
        self._first_line = True
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._event_name: str | None = None
        self._event_broken = False  # a line of it was too long, or its data grew past max_line_bytes
        self._broken_head = b""
        self._broken_tail = bytearray()  # the last TAIL_BYTES of a broken event's data

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the response body, cut anywhere."""
        if not self._streaming:
            self._buffer(chunk)
            return
        for line in self._lines.feed(chunk):
            self._line(line)

    def finish(self) -> MeteredCall | None:
        """The call's usage, or None when the response told none (cut short, malformed, no usage)."""
        # A streamed event not closed by a blank line is incomplete: SSE clients drop it too.
        if not self._streaming and self._body is not None:
            self._read_body(_json(self._body))
            self._body = None
        if self._usage is None:
            return None
        return MeteredCall(self._model or self._request_model, self._usage)

    # --- non-streaming --------------------------------------------------------------------------

    def _buffer(self, chunk: bytes) -> None:
        if self._body is None:
            return
        if len(self._body) + len(chunk) > self._max_body_bytes:
            self._body = None  # too big to be a model reply worth parsing: give up, free the memory
            return
        self._body += chunk

    def _read_body(self, body: object) -> None:
        if isinstance(body, list) and self._api == "gemini":
            # Gemini's non-SSE stream form is a JSON array of responses with cumulative usage.
            for item in body:
                self._read_response(_dict(item))
        else:
            self._read_response(_dict(body))

    def _read_response(self, response: dict[str, Any]) -> None:
        """One whole reply object (a JSON body, or a chunk shaped like one): its usage replaces any seen."""
        gemini = self._api == "gemini"
        self._model = _name(response.get("modelVersion" if gemini else "model")) or self._model
        raw = response.get("usageMetadata" if gemini else "usage")
        if not isinstance(raw, dict):
            return
        if self._api == "anthropic_messages":
            self._usage = _anthropic_usage(raw)
        elif self._api == "openai_responses":
            self._usage = _responses_usage(raw)
        elif self._api == "chat_completions":
            self._usage = _chat_usage(raw)
        else:
            self._usage = _gemini_usage(raw)

    # --- streaming ------------------------------------------------------------------------------

    def _line(self, line: bytes | _Overlong) -> None:
        if isinstance(line, _Overlong):
            self._overlong(line)
            return
        if self._first_line:
            line, self._first_line = line.removeprefix(_BOM), False
        if not line:
            self._dispatch()
            return
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"data":
            self._data_bytes += len(value) + 1
            if not self._event_broken and self._data_bytes > self._max_line_bytes:
                self._break_event()
            if self._event_broken:
                self._keep_tail(value)
            else:
                self._data.append(value)
        elif field == b"event":
            self._event_name = value.decode("utf-8", "replace")
        # Comments (empty field name), id, retry and unknown fields say nothing about usage.

    def _overlong(self, line: _Overlong) -> None:
        self._first_line = False
        field, _, value = line.head.partition(b":")
        if field != b"data":
            return  # an overlong comment or unknown field says nothing about usage
        if not self._event_broken:
            self._break_event()
        self._broken_head = self._broken_head or value.removeprefix(b" ")
        self._keep_tail(line.tail)

    def _break_event(self) -> None:
        joined = b"\n".join(self._data)
        self._event_broken, self._data = True, []
        self._broken_head = joined[:HEAD_BYTES]
        self._broken_tail = bytearray(joined[-TAIL_BYTES:])

    def _keep_tail(self, value: bytes) -> None:
        if self._broken_tail:
            self._broken_tail += b"\n"
        self._broken_tail += value[-TAIL_BYTES:]
        if len(self._broken_tail) > 2 * TAIL_BYTES:
            del self._broken_tail[:-TAIL_BYTES]

    def _dispatch(self) -> None:
        data, name, broken = self._data, self._event_name, self._event_broken
        head, tail = self._broken_head, bytes(self._broken_tail)
        self._data, self._data_bytes, self._event_name, self._event_broken = [], 0, None, False
        self._broken_head, self._broken_tail = b"", bytearray()
        if broken:
            self._recover_usage(name, head, tail)
            return
        if not data:
            return
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            return
        event = _json(payload)
        if isinstance(event, dict):
            self._event(event, _name(event.get("type")) or name)

    def _event(self, event: dict[str, Any], kind: str | None) -> None:
        if self._api == "anthropic_messages":
            self._anthropic_event(event, kind)
        elif self._api == "openai_responses":
            response = _dict(event.get("response"))
            self._model = _name(response.get("model")) or self._model
            if kind in _RESPONSES_FINAL:
                self._read_response(response)
        else:
            self._read_response(event)  # chat and Gemini chunks are shaped like whole replies

    def _anthropic_event(self, event: dict[str, Any], kind: str | None) -> None:
        if kind == "message_start":
            self._read_response(_dict(event.get("message")))
        elif kind == "message_delta":
            raw = event.get("usage")
            if isinstance(raw, dict):
                self._usage = _anthropic_usage(raw, self._usage)

    def _recover_usage(self, name: str | None, head: bytes, tail: bytes) -> None:
        """The usage of an event too big to parse, from the object after the last usage key in its tail.
        A usage key cannot occur unescaped inside a JSON string, so the last one is structure. Anthropic's
        usage events are small: a huge one is not trusted."""
        if self._api == "anthropic_messages":
            return
        if self._api == "openai_responses":
            found = _TYPE.search(head)
            kind = name or (found.group(1).decode() if found else None)
            if kind not in _RESPONSES_FINAL:
                return
        key = "usageMetadata" if self._api == "gemini" else "usage"
        at = tail.rfind(f'"{key}"'.encode())
        if at < 0:
            return
        raw = _object_at(tail[at + len(key) + 2 :].lstrip().removeprefix(b":"))
        if raw is not None:
            self._read_response({key: raw})


def _object_at(text: bytes) -> dict[str, Any] | None:
    """The JSON object `text` starts with (after blanks), ignoring whatever follows it."""
    try:
        found, _ = json.JSONDecoder().raw_decode(text.decode("utf-8", "replace").lstrip())
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None
