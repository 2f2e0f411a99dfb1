"""A small server-sent events client for tests: real connections, events parsed as the WHATWG spec says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class SseComment:
    text: str


async def sse_items(response: httpx.Response) -> AsyncIterator[SseEvent | SseComment]:
    """Events and comments of a streaming response, in order, until the server closes it."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields or "event" in fields:
                yield SseEvent(fields.get("id"), fields.get("event", "message"), fields.get("data", ""))
            fields = {}
        elif line.startswith(":"):
            yield SseComment(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


async def read_events(response: httpx.Response, limit: int | None = None) -> list[SseEvent]:
    """The events (comments skipped) until the stream ends, or until `limit` of them."""
    found: list[SseEvent] = []
    async for item in sse_items(response):
        if isinstance(item, SseEvent):
            found.append(item)
            if limit is not None and len(found) >= limit:
                break
    return found
