"""Blocking calls (file and S3 I/O) run in worker threads without outliving their caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a worker thread. When the caller is cancelled, this waits for the call
    to finish before the cancellation propagates.

    A thread cannot be stopped: with a plain `asyncio.to_thread`, a cancelled caller would close a file
    descriptor (whose number the kernel may hand to another file at once) or abort an upload while the
    thread still uses it. Each call here is one chunk or one request, so the wait is short.
    """
    call = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # the call's own error no longer matters
            await call
        raise
