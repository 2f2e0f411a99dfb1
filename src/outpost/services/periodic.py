"""A step the server repeats in the background (the retention sweep, storage accrual)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` at once and then every `interval_s`, between `start()` and `stop()`.

    A step that fails is logged and tried again at the next interval: a store or disk hiccup must not end
    the loop for the server's life. `stop()` cancels a step under way, so a step must leave things
    consistent wherever it is cancelled."""

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float) -> None:
        self._name = name
        self._step = step
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outpost-{self._name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("%s failed; retrying in %.0f s", self._name, self._interval_s)
            await asyncio.sleep(self._interval_s)
