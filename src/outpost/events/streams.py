"""Event streams for API clients: one dispatch's events, live, as `text/event-stream` frames.

A stream sends every event after the client's cursor (0, or the `Last-Event-ID` it resumes from), in
order, and ends after the terminal status event. Events older than what the dispatch's shared tail holds
are read from the store a page at a time; newer ones are taken from the tail, where every stream of the
dispatch finds the same encoded frames. A client that falls so far behind that its next event dropped out
of the tail is sent `event: resume` with the id to resume from, and the stream ends: it reconnects with
`Last-Event-ID` and catches up from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from outpost.db.repositories import events as event_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.store import Store
from outpost.domain.dispatch import TERMINAL_STATUSES, DispatchStatus
from outpost.errors import InvalidInput, OutpostError
from outpost.events.base import EventBus
from outpost.events.feed import FeedFilter, TenantFeed
from outpost.events.settings import EventSettings
from outpost.events.sse import KEEPALIVE, event_frame, parse_seq
from outpost.events.tails import PAGE_EVENTS, DispatchTail, DispatchTails, Frame
from outpost.services.dispatches import DispatchService
from outpost.services.keys import Principal

log = logging.getLogger(__name__)

Frames = AsyncGenerator[bytes, None]


class EventStreams:
    """Opens streams; holds this process's dispatch tails."""

    def __init__(
        self, store: Store, bus: EventBus, dispatches: DispatchService, settings: EventSettings
    ) -> None:
        self._store = store
        self._dispatches = dispatches
        self._keepalive_s = settings.keepalive_s
        self.tails = DispatchTails(
            store, bus, dispatch_frame, settings.poll_interval_s, settings.recent_bytes
        )
        self.feed = TenantFeed(store, bus, settings.keepalive_s, settings.poll_interval_s)

    async def open_dispatch(
        self, caller: Principal, dispatch_id: str, resume_from: str | None, source: str = "Last-Event-ID"
    ) -> Frames:
        """The frames of a dispatch's events after `resume_from` (None: from the first).

        Raises NotFound for unknown ids and other tenants' dispatches alike, and InvalidInput naming
        `source` for a resume point that is not a sequence number or is past the dispatch's last event.
        Checked here, before the response starts; the frames come as the caller iterates.
        """
        cursor = parse_seq(resume_from, source) if resume_from is not None else 0
        row = await self._dispatches.get(caller, dispatch_id)
        if cursor > row.event_seq:
            raise InvalidInput(
                f"{source} {cursor} is past the last event of this dispatch ({row.event_seq}): resume from "
                "an id this stream sent",
                source,
            )
        if DispatchStatus(row.status).is_terminal:
            return self._ended(row.id, cursor)
        return self._live(row, cursor)

    async def open_tenant(
        self, caller: Principal, wanted: FeedFilter, resume_from: str | None, source: str = "Last-Event-ID"
    ) -> Frames:
        """The frames of the tenant's feed (see `feed.TenantFeed.open`)."""
        return await self.feed.open(caller.tenant_id, wanted, resume_from, source)

    async def _ended(self, dispatch_id: str, cursor: int) -> Frames:
        """What is left of a dispatch that has ended, straight from the store."""
        try:
            while True:
                rows = await self._read(dispatch_id, cursor)
                if rows:
                    yield b"".join(dispatch_frame(row).payload for row in rows)
                    cursor = rows[-1].seq
                if len(rows) < PAGE_EVENTS:
                    return
        except OutpostError as exc:  # the response has started: end it, the client resumes
            log.info("event stream of %s ended: %s", dispatch_id, exc.detail)

    async def _live(self, row: DispatchRow, cursor: int) -> Frames:
        tail = self.tails.follow(row.tenant_id, row.id, row.event_seq)
        try:
            async with aclosing(self._follow(tail, cursor)) as frames:
                async for chunk in frames:
                    yield chunk
        except OutpostError as exc:
            log.info("event stream of %s ended: %s", row.id, exc.detail)
        finally:
            self.tails.unfollow(tail)

    async def _follow(self, tail: DispatchTail, cursor: int) -> Frames:
        """Catch up from the store, then take frames from the tail until the terminal one."""
        sent_at = time.monotonic()
        live = False
        while True:
            news = tail.news
            frames = tail.frames_after(cursor)
            if frames is None and live:
                yield event_frame(None, "resume", {"last_event_id": cursor})
                return
            live = frames is not None
            frames = frames if frames is not None else await self._catch_up(tail, cursor)
            if frames:
                yield b"".join(frame.payload for frame in frames)
                if frames[-1].terminal:
                    return
                cursor, sent_at = frames[-1].seq, time.monotonic()
            elif tail.failure is not None or tail.ended:
                return
            elif not live:  # the store lost those events (retention): go on from the tail
                cursor = tail.floor
            elif not await _wait_until(news, sent_at + self._keepalive_s):
                yield KEEPALIVE
                sent_at = time.monotonic()

    async def _catch_up(self, tail: DispatchTail, cursor: int) -> list[Frame]:
        """The next page of events the tail does not hold, from the store (encoded for this stream)."""
        return [dispatch_frame(row) for row in await self._read(tail.dispatch_id, cursor)]

    async def _read(self, dispatch_id: str, after_seq: int) -> list[EventRow]:
        async with self._store.read() as conn:
            return await event_repo.list_events(conn, dispatch_id, after_seq, PAGE_EVENTS)


def dispatch_frame(row: EventRow) -> Frame:
    """An event of a dispatch's own stream: its fields as the `/logs` page shows them."""
    data = {"seq": row.seq, "created_at": row.created_at, "kind": row.kind, "data": row.data}
    return Frame(row.seq, event_frame(str(row.seq), row.kind, data), is_terminal(row))


def is_terminal(row: EventRow) -> bool:
    return row.kind == "status" and row.data.get("status") in TERMINAL_STATUSES


async def _wait_until(news: asyncio.Event, deadline: float) -> bool:
    """Wait for `news` until the `time.monotonic()` deadline; False when the deadline came first."""
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await news.wait()
    except TimeoutError:
        return False
    return True
