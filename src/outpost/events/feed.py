"""A tenant's live feed: the events of all its dispatches, for dashboards, as `text/event-stream` frames.

Each frame's id is its feed position (`<txn>-<dispatch id>-<seq>`; see db/repositories/event_feed.py),
which a client sends back as `Last-Event-ID` to resume exactly after it: nothing committed later is
skipped, nothing sent is repeated. A feed opened without one starts at the present. The feed never ends;
filters (`dispatch`, `status`) only choose which events are sent, so a client that saw no event for a
while resumes from the last one it was sent and the filtered-out ones are read (and dropped) again.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from outpost.db.repositories import event_feed as feed_repo
from outpost.db.repositories.event_feed import FeedEvent, FeedPage, FeedPosition
from outpost.db.store import Store
from outpost.domain.dispatch import DispatchStatus
from outpost.domain.ids import is_ulid
from outpost.errors import InvalidInput, OutpostError
from outpost.events.base import EventBus
from outpost.events.sse import KEEPALIVE, MAX_EVENT_ID_CHARS, event_frame

log = logging.getLogger(__name__)

PAGE_EVENTS = 500
MAX_DISPATCH_FILTER = 100
WITHHELD_RETRY_S = 0.005
"""How soon to read again when newer events wait for an older transaction to end (PostgreSQL); the wait
doubles while they keep waiting, up to the poll interval."""
_POSITION = re.compile(r"([0-9]{1,19})(?:-([0-9A-HJKMNP-TV-Z]{26})-([0-9]{1,18}))?")

Frames = AsyncGenerator[bytes, None]


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """Which events a feed sends: of these dispatches only (empty: all of the tenant's), and only status
    events reaching one of these statuses (empty: every event)."""

    dispatch_ids: tuple[str, ...] = ()
    statuses: frozenset[DispatchStatus] = frozenset()

    def check(self) -> None:
        """Raises InvalidInput naming `dispatch` for malformed or too many ids."""
        if len(self.dispatch_ids) > MAX_DISPATCH_FILTER:
            raise InvalidInput(f"at most {MAX_DISPATCH_FILTER} dispatch ids per feed", "dispatch")
        if not all(is_ulid(dispatch_id) for dispatch_id in self.dispatch_ids):
            raise InvalidInput("dispatch must be a dispatch id", "dispatch")

    def accepts(self, found: FeedEvent) -> bool:
        if not self.statuses:
            return True
        return found.event.kind == "status" and found.event.data.get("status") in self.statuses


def format_position(position: FeedPosition) -> str:
    if position.dispatch_id is None:
        return str(position.txn)
    return f"{position.txn}-{position.dispatch_id}-{position.seq}"


def parse_position(value: str, source: str) -> FeedPosition:
    """Raises InvalidInput naming `source` for anything but an id this feed sends."""
    found = _POSITION.fullmatch(value) if len(value) <= MAX_EVENT_ID_CHARS else None
    if found is None:
        raise InvalidInput(f"{source} must be an event id of this feed, as it sent it", source)
    txn, dispatch_id, seq = found.groups()
    return FeedPosition(int(txn), dispatch_id, int(seq or 0))


class TenantFeed:
    def __init__(self, store: Store, bus: EventBus, keepalive_s: float, poll_s: float) -> None:
        self._store = store
        self._bus = bus
        self._keepalive_s = keepalive_s
        self._poll_s = poll_s

    async def open(self, tenant_id: str, wanted: FeedFilter, resume_from: str | None, source: str) -> Frames:
        """The frames of the tenant's feed after `resume_from` (None: from now on).

        Raises InvalidInput naming `dispatch` for a bad filter, and naming `source` for a resume point
        this feed did not send or that lies in the future. Checked before the response starts.
        """
        wanted.check()
        start = parse_position(resume_from, source) if resume_from is not None else None
        async with self._store.read() as conn:
            bounds = await feed_repo.feed_bounds(conn, self._store.dialect)
        if start is not None and start.txn >= bounds.next_txn:
            raise InvalidInput(f"{source} {resume_from} is past the end of this feed", source)
        return self._follow(tenant_id, wanted, start or bounds.start)

    async def _follow(self, tenant_id: str, wanted: FeedFilter, position: FeedPosition) -> Frames:
        try:
            async with self._bus.subscribe(tenant_id) as subscription:
                sent_at, withheld_wait_s = time.monotonic(), WITHHELD_RETRY_S
                while True:
                    page = await self._read(tenant_id, position, wanted)
                    frames = [feed_frame(found) for found in page.events if wanted.accepts(found)]
                    position = page.events[-1].position if page.events else position
                    if frames:
                        yield b"".join(frames)
                        sent_at = time.monotonic()
                    if len(page.events) == PAGE_EVENTS:
                        continue
                    # Withheld events wait for an older transaction: look again soon, then less often.
                    wait_s, withheld_wait_s = (
                        (withheld_wait_s, min(2 * withheld_wait_s, self._poll_s))
                        if page.withheld
                        else (self._poll_s, WITHHELD_RETRY_S)
                    )
                    keepalive_at = sent_at + self._keepalive_s
                    await subscription.wait(max(0.0, min(wait_s, keepalive_at - time.monotonic())))
                    if time.monotonic() >= keepalive_at:
                        yield KEEPALIVE
                        sent_at = time.monotonic()
        except OutpostError as exc:
            log.info("event feed of tenant %s ended: %s", tenant_id, exc.detail)

    async def _read(self, tenant_id: str, after: FeedPosition, wanted: FeedFilter) -> FeedPage:
        async with self._store.read() as conn:
            return await feed_repo.read_feed(
                conn, self._store.dialect, tenant_id, after, wanted.dispatch_ids, PAGE_EVENTS
            )


def feed_frame(found: FeedEvent) -> bytes:
    """An event of the feed: the dispatch's event fields plus `dispatch_id`."""
    row = found.event
    data = {
        "dispatch_id": row.dispatch_id, "seq": row.seq, "created_at": row.created_at, "kind": row.kind,
        "data": row.data,
    }  # fmt: skip
    return event_frame(format_position(found.position), row.kind, data)
