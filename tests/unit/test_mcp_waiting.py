"""`outpost_dispatch`'s wait: polling events, progress notifications, the deadline, rate limits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from outpost.domain.dispatch import DispatchStatus
from outpost.errors import RateLimited
from outpost.mcp import waiting
from outpost.schemas.dispatches import DispatchRead, EventPage, EventRead

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int, kind: str, **data: object) -> EventRead:
    return EventRead(seq=seq, created_at=NOW, kind=kind, data=data)


def dispatch(status: DispatchStatus) -> DispatchRead:
    return DispatchRead.model_construct(id="01D", status=status)


@dataclass
class ScriptedEvents:
    """A backend whose event reads answer from a script (a page, or an error to raise), then nothing."""

    script: list[Sequence[EventRead] | Exception]
    final: DispatchStatus = DispatchStatus.SUCCEEDED
    reads_after: list[int] = field(default_factory=list)

    async def list_events(self, dispatch_id: str, after_seq: int, limit: int) -> EventPage:
        self.reads_after.append(after_seq)
        step = self.script.pop(0) if self.script else []
        if isinstance(step, Exception):
            raise step
        full = len(step) == limit
        return EventPage(items=list(step), next_after=step[-1].seq if full else None)

    async def get_dispatch(self, dispatch_id: str) -> DispatchRead:
        return dispatch(self.final)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the wait must not call {name}")


@dataclass
class Notes:
    sent: list[tuple[float, str]] = field(default_factory=list)

    async def __call__(self, progress: float, message: str) -> None:
        self.sent.append((progress, message))


async def test_each_read_with_news_is_reported_until_the_terminal_event() -> None:
    backend = ScriptedEvents([
        [event(1, "status", status="queued")],
        [],
        [event(2, "status", status="running"), event(3, "log", stream="stdout", line="hi")],
        [event(4, "status", status="failed", reason="agent_error")],
    ], final=DispatchStatus.FAILED)  # fmt: skip
    notes = Notes()
    ended = await waiting.wait_for_end(backend, dispatch(DispatchStatus.QUEUED), 10, notes)  # type: ignore[arg-type]
    assert ended.status == DispatchStatus.FAILED
    assert notes.sent == [
        (1, "status: queued"),
        (2, "status: running"),
        (3, "hi"),
        (4, "status: failed (agent_error)"),
    ]
    assert backend.reads_after == [0, 1, 1, 3]


async def test_a_wait_that_runs_out_returns_the_dispatch_as_it_is_then() -> None:
    backend = ScriptedEvents([[event(1, "status", status="running")]], final=DispatchStatus.RUNNING)
    started = time.monotonic()
    ended = await waiting.wait_for_end(backend, dispatch(DispatchStatus.QUEUED), 0.3, Notes())  # type: ignore[arg-type]
    assert ended.status == DispatchStatus.RUNNING
    assert 0.3 <= time.monotonic() - started < 1.5


async def test_an_ended_dispatch_is_returned_without_reading_events() -> None:
    backend = ScriptedEvents([])
    ended = await waiting.wait_for_end(backend, dispatch(DispatchStatus.CANCELLED), 10, Notes())  # type: ignore[arg-type]
    assert ended.status == DispatchStatus.CANCELLED
    assert backend.reads_after == []


async def test_a_rate_limited_read_waits_as_long_as_told_and_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def record_sleep(delay_s: float) -> None:
        slept.append(delay_s)

    monkeypatch.setattr(waiting.anyio, "sleep", record_sleep)
    backend = ScriptedEvents([RateLimited("slow down", 0.7), [event(1, "status", status="succeeded")]])
    ended = await waiting.wait_for_end(backend, dispatch(DispatchStatus.RUNNING), 10, Notes())  # type: ignore[arg-type]
    assert ended.status == DispatchStatus.SUCCEEDED
    assert slept == [0.7]


async def test_a_full_page_is_followed_at_once_and_quiet_reads_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []

    async def record_sleep(delay_s: float) -> None:
        slept.append(round(delay_s, 3))

    monkeypatch.setattr(waiting.anyio, "sleep", record_sleep)
    flood = [event(seq, "log", line=str(seq)) for seq in range(1, waiting.EVENTS_PER_POLL + 1)]
    quiet: list[Sequence[EventRead] | Exception] = [[] for _ in range(6)]
    backend = ScriptedEvents([flood, *quiet, [event(501, "status", status="succeeded")]])
    await waiting.wait_for_end(backend, dispatch(DispatchStatus.RUNNING), 10, Notes())  # type: ignore[arg-type]
    assert backend.reads_after[:2] == [0, 500]  # no sleep between a full page and the next read
    assert slept == [0.02, 0.04, 0.08, 0.16, 0.25, 0.25]


def test_a_progress_message_is_one_short_line() -> None:
    assert waiting.describe(event(1, "notice", message="retrying")) == "retrying"
    assert waiting.describe(event(2, "agent", text="thinking")) == "agent"
    clipped = waiting.describe(event(3, "log", line="x" * 1000))
    assert len(clipped) == waiting.MAX_MESSAGE_CHARS
    assert clipped.endswith("…")


async def test_the_wait_can_be_cancelled_by_the_caller() -> None:
    backend = ScriptedEvents([], final=DispatchStatus.RUNNING)
    with anyio.move_on_after(0.2) as scope:
        await waiting.wait_for_end(backend, dispatch(DispatchStatus.RUNNING), 60, Notes())  # type: ignore[arg-type]
    assert scope.cancelled_caught
