"""Ending a stream whose API key stops being valid while it is open.

A stream is authenticated once, when it opens, and may then stay open for hours. Revoking the key (here or
on another server) or its expiry must end it: before passing on a frame, the stream asks the store again
once `recheck_s` has passed since it last did. Keep-alives guarantee a frame at least every `keepalive_s`,
so an idle stream is checked too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from outpost.events.sse import event_frame

Frames = AsyncGenerator[bytes, None]
KEY_GONE = {"detail": "the API key of this stream was revoked or has expired"}


async def while_key_is_live(
    frames: Frames, is_live: Callable[[], Awaitable[bool]], recheck_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> Frames:  # fmt: skip
    """`frames`, until a check finds the key no longer valid: then one `event: error` frame, and the end.
    Closes `frames` whenever it stops."""
    checked_at = clock()
    try:
        async for frame in frames:
            if clock() - checked_at >= recheck_s:
                if not await is_live():
                    yield event_frame(None, "error", KEY_GONE)
                    return
                checked_at = clock()
            yield frame
    finally:
        await frames.aclose()
