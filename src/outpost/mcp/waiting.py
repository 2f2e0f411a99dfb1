"""Waiting for a dispatch to end, with progress notifications as its events arrive.

The wait polls the dispatch's events with a short backoff: a shell dispatch often ends within tens of
milliseconds, so the first polls come quickly, and a long quiet run costs four reads a second. Events
carry status changes as well as output, so one read per poll sees both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum, auto

import anyio

from outpost.domain.dispatch import TERMINAL_STATUSES
from outpost.errors import RateLimited
from outpost.mcp.base import OutpostBackend
from outpost.schemas.dispatches import DispatchRead, EventRead

FIRST_DELAY_S = 0.02
MAX_DELAY_S = 0.25
EVENTS_PER_POLL = 500
MAX_MESSAGE_CHARS = 200

ReportProgress = Callable[[float, str], Awaitable[None]]
"""Sends one progress notification: a number that grows with each one, and what happened."""


class _Poll(Enum):
    ENDED = auto()  # the terminal event has arrived
    MORE = auto()  # a full page: more events are waiting now
    SOME = auto()  # new events, all read
    NONE = auto()  # nothing new


async def wait_for_end(
    backend: OutpostBackend, dispatch: DispatchRead, wait_s: float, report: ReportProgress
) -> DispatchRead:
    """The dispatch once it has ended, or as it is after `wait_s` seconds (not an error).

    Each poll that brings events reports progress (see `_worth_reporting`): each event's sequence number,
    and what it says (a status change, an output line, a notice). Raises what the backend raises.
    """
    if dispatch.status.is_terminal:
        return dispatch
    deadline = anyio.current_time() + wait_s
    events = _EventFeed(backend, dispatch.id, report)
    delay_s = FIRST_DELAY_S
    while (polled := await events.poll()) is not _Poll.ENDED:
        remaining_s = deadline - anyio.current_time()
        if remaining_s <= 0:
            break
        if polled is _Poll.MORE:
            continue
        if polled is _Poll.SOME:
            delay_s = FIRST_DELAY_S
        # Only the sleep is cut short by the deadline: a read in flight always completes.
        await anyio.sleep(min(max(delay_s, events.retry_after_s or 0), remaining_s))
        delay_s = min(delay_s * 2, MAX_DELAY_S)
    return await backend.get_dispatch(dispatch.id)


class _EventFeed:
    """Reads a dispatch's events in order and reports the news of each read."""

    def __init__(self, backend: OutpostBackend, dispatch_id: str, report: ReportProgress) -> None:
        self._backend = backend
        self._dispatch_id = dispatch_id
        self._report = report
        self._after_seq = 0
        self.retry_after_s: float | None = None

    async def poll(self) -> _Poll:
        """One read. A rate-limited read is not an error: it is NONE, and `retry_after_s` says when."""
        try:
            page = await self._backend.list_events(self._dispatch_id, self._after_seq, EVENTS_PER_POLL)
        except RateLimited as exc:
            self.retry_after_s = exc.retry_after_s
            return _Poll.NONE
        self.retry_after_s = None
        if not page.items:
            return _Poll.NONE
        self._after_seq = page.items[-1].seq
        for event in _worth_reporting(page.items):
            await self._report(event.seq, describe(event))
        if any(_is_terminal(event) for event in page.items):
            return _Poll.ENDED
        return _Poll.MORE if page.next_after is not None else _Poll.SOME


def describe(event: EventRead) -> str:
    """One short line for a progress notification: `status: running`, an output line, a notice."""
    data = event.data
    if event.kind == "status":
        text = f"status: {data.get('status', '?')}"
        if data.get("reason"):
            text += f" ({data['reason']})"
    elif event.kind == "log":
        text = str(data.get("line", ""))
    elif event.kind == "notice":
        text = str(data.get("message", ""))
    else:
        text = event.kind
    return text if len(text) <= MAX_MESSAGE_CHARS else f"{text[: MAX_MESSAGE_CHARS - 1]}…"


def _worth_reporting(events: list[EventRead]) -> list[EventRead]:
    """Of one read's events, in order: every status change, the last output line, and the last event
    when it is neither (a client sees each step and the latest output, not a flood)."""
    last_line = next((event for event in reversed(events) if event.kind == "log"), None)
    chosen = [event for event in events if event.kind == "status" or event is last_line]
    if events[-1] not in chosen:
        chosen.append(events[-1])
    return chosen


def _is_terminal(event: EventRead) -> bool:
    return event.kind == "status" and event.data.get("status") in TERMINAL_STATUSES
