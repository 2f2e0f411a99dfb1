"""How a streamed reply goes out: whole, or broken in one of the ways failure tests ask for.

* `truncated`: the first frame of a valid reply, then the connection closes mid-body (no final chunk
  and no terminating event), as when an upstream drops. Clients see an incomplete chunked read.
* `malformed_sse`: one event whose data line is cut JSON, then a clean end. Clients see a parse error.
* `stall`: the first frame, then silence until the server stops: for upstream read timeouts.

The first frame is each API's opening event (`message_start`, `response.created`, the first chat
chunk, the first Gemini chunk), so a client has accepted the stream before it breaks.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Literal

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.fakes.provider_wire import sse

StreamMode = Literal["normal", "truncated", "malformed_sse", "stall"]
_HEADERS = {"cache-control": "no-cache"}
_POLL_S = 0.05


def sse_response(frames: list[bytes], stopping: threading.Event | None = None) -> StreamingResponse:
    """The frames as an SSE body; with `stopping`, the body then stays open until it is set."""

    async def chunks() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame
        # Polling `stopping` (a threading.Event set from the test's thread) rather than waiting in a
        # worker thread: a stalled stream then holds no thread and stays cancellable.
        while stopping is not None and not stopping.is_set():  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)

    return StreamingResponse(chunks(), media_type="text/event-stream", headers=_HEADERS)


class CutStream(StreamingResponse):
    """Sends its frames, then returns without ending the body.

    uvicorn then closes the connection mid-body (and logs "ASGI callable returned without completing
    response."), which is exactly what a client sees when an upstream drops.
    """

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__(iter(()), media_type="text/event-stream", headers=_HEADERS)
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for frame in self.frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})


def _split(frame: bytes) -> tuple[str | None, str]:
    """(event name, data) of one SSE frame."""
    fields = dict(line.split(": ", 1) for line in frame.decode().splitlines() if ": " in line)
    return fields.get("event"), fields["data"]


def head_frames(frames: list[bytes], gemini: bool) -> list[bytes]:
    """The opening of a valid stream, not yet complete."""
    if not gemini:
        return frames[:1]
    # Gemini has no terminating event: the chunk with a finishReason is the last. Ours is the only
    # chunk, so its opening is that chunk without the finishReason.
    _, data = _split(frames[0])
    chunk = json.loads(data)
    for candidate in chunk.get("candidates", []):
        candidate.pop("finishReason", None)
    return [sse(chunk)]


def malformed_frames(frames: list[bytes]) -> list[bytes]:
    """The stream's first event with its data JSON cut in half, ended so that clients do parse it."""
    event, data = _split(frames[0])
    head = f"event: {event}\n" if event else ""
    return [f"{head}data: {data[: len(data) // 2]}\n\n".encode()]


def stream_response(
    mode: StreamMode, frames: list[bytes], gemini: bool, stopping: threading.Event
) -> Response:
    """The reply's `frames` sent as `mode` says; `stopping` releases a stalled stream."""
    if mode == "truncated":
        return CutStream(head_frames(frames, gemini))
    if mode == "malformed_sse":
        return sse_response(malformed_frames(frames))
    if mode == "stall":
        return sse_response(head_frames(frames, gemini), stopping)
    return sse_response(frames)
