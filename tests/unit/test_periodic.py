"""The background loop behind the retention sweep and storage accrual."""

from __future__ import annotations

import asyncio

import pytest

from outpost.services.periodic import Periodic


async def test_a_failing_step_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    third = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        raise RuntimeError("store hiccup")

    loop = Periodic("test step", step, interval_s=0.001)
    loop.start()
    loop.start()  # a second start does not start a second loop
    await asyncio.wait_for(third.wait(), 5)
    await loop.stop()
    stopped_at = calls
    await asyncio.sleep(0.01)
    assert calls == stopped_at >= 3
    assert "test step failed; retrying" in caplog.text


async def test_stop_cancels_a_step_under_way_and_is_idempotent() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = Periodic("slow step", step, interval_s=60)
    loop.start()
    await asyncio.wait_for(started.wait(), 5)
    await loop.stop()
    await loop.stop()
    assert cancelled.is_set()
