"""Blocking steps of a start run in worker threads, which a cancel cannot stop.

A worker cancels a start as it stops. The start's own cleanup must then come after the thread's step,
not race it: a staging thread still making files after they were removed, or a listener socket made
after nobody waits for it, would outlive the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def _keep(_: object) -> None:
    """Undo nothing: the caller's own cleanup removes what the step made."""


async def in_thread(fn: Callable[[], T], undo: Callable[[T], None] = _keep) -> T:
    """`fn()` in a worker thread. Cancelled meanwhile, wait for the thread to end, `undo` (in a thread)
    what it returned, then let the cancel go on. A step that failed made nothing to undo."""
    step = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        try:
            made = await step
        except Exception:  # the step failed, so it made nothing; the cancel goes on
            raise asyncio.CancelledError from None
        try:
            await asyncio.to_thread(undo, made)
        except Exception:
            log.exception("undoing a cancelled start's step failed; the janitor removes what is left")
        raise
