"""Shared tails: the recent events of each followed dispatch, read from the store once per process and
encoded once, for every stream that follows the dispatch.

A tail exists while at least one stream follows its dispatch. One pump task per tail subscribes to the
bus and, on each wake-up (or every `poll_interval_s` without one), reads the events after the last one it
holds and appends their encoded frames. Streams never wait on each other or on the pump's readers: each
keeps only its own cursor and takes the frames after it. The tail keeps frames up to `max_bytes`; a
stream whose next frame dropped out of it reads the store instead (or, once live, is told to resume).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from outpost.db.repositories import events as event_repo
from outpost.db.repositories.events import EventRow
from outpost.db.store import Store
from outpost.errors import OutpostError
from outpost.events.base import EventBus

log = logging.getLogger(__name__)

PAGE_EVENTS = 500


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    payload: bytes
    """The whole SSE event, as sent."""
    terminal: bool
    """The dispatch's terminal status event: nothing follows it."""


Encoder = Callable[[EventRow], Frame]


class DispatchTail:
    """The frames of one dispatch after `floor` (its earlier frames are not, or no longer, held)."""

    def __init__(self, tenant_id: str, dispatch_id: str, start_seq: int, max_bytes: int) -> None:
        self.tenant_id = tenant_id
        self.dispatch_id = dispatch_id
        self.floor = start_seq
        """Frames up to this seq are not held: a cursor below it must read the store."""
        self.last_seq = start_seq
        self.ended = False
        """The terminal frame is held: the pump stopped."""
        self.failure: BaseException | None = None
        """Why the pump stopped before the end (the store or the bus failed, the server is stopping)."""
        self.followers = 0
        self.pump: asyncio.Task[None] | None = None
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._news = asyncio.Event()

    @property
    def news(self) -> asyncio.Event:
        """Set when frames are appended or the pump stops; take it before reading frames, then wait on it."""
        return self._news

    def frames_after(self, seq: int) -> list[Frame] | None:
        """The held frames after `seq`, oldest first; None when some of them are no longer held."""
        if seq < self.floor:
            return None
        newer: list[Frame] = []
        for frame in reversed(self._frames):
            if frame.seq <= seq:
                break
            newer.append(frame)
        newer.reverse()
        return newer

    def append(self, frames: list[Frame]) -> None:
        for frame in frames:
            self._frames.append(frame)
            self._bytes += len(frame.payload)
            self.last_seq = frame.seq
            self.ended = self.ended or frame.terminal
        while self._bytes > self._max_bytes and len(self._frames) > 1:
            dropped = self._frames.popleft()
            self._bytes -= len(dropped.payload)
            self.floor = dropped.seq
        self._wake()

    def stop(self, failure: BaseException | None) -> None:
        self.failure = failure
        self._wake()

    def _wake(self) -> None:
        self._news.set()
        self._news = asyncio.Event()


class DispatchTails:
    """The tails of this process, by dispatch id."""

    def __init__(self, store: Store, bus: EventBus, encode: Encoder, poll_s: float, max_bytes: int) -> None:
        self._store = store
        self._bus = bus
        self._encode = encode
        self._poll_s = poll_s
        self._max_bytes = max_bytes
        self._tails: dict[str, DispatchTail] = {}

    @property
    def active(self) -> int:
        """Tails with followers (and so a pump) now."""
        return len(self._tails)

    def follow(self, tenant_id: str, dispatch_id: str, head_seq: int) -> DispatchTail:
        """The dispatch's tail, made (holding frames after `head_seq`) if no stream follows it yet. Pair
        every call with `unfollow`."""
        tail = self._tails.get(dispatch_id)
        if tail is None or tail.failure is not None:  # a failed tail's streams end; new ones start afresh
            tail = DispatchTail(tenant_id, dispatch_id, head_seq, self._max_bytes)
            tail.pump = asyncio.create_task(self._pump(tail), name=f"event tail {dispatch_id}")
            self._tails[dispatch_id] = tail
        tail.followers += 1
        return tail

    def unfollow(self, tail: DispatchTail) -> None:
        """Synchronous, so that a stream cancelled mid-write still lets go: the last follower stops the
        pump (its bus subscription closes as the cancellation reaches it)."""
        tail.followers -= 1
        if tail.followers == 0:
            if self._tails.get(tail.dispatch_id) is tail:
                del self._tails[tail.dispatch_id]
            if tail.pump is not None:
                tail.pump.cancel()

    async def _pump(self, tail: DispatchTail) -> None:
        try:
            async with self._bus.subscribe(tail.tenant_id, tail.dispatch_id) as subscription:
                while not tail.ended:
                    rows = await self._read(tail.dispatch_id, tail.last_seq)
                    tail.append([self._encode(row) for row in rows])
                    if len(rows) < PAGE_EVENTS and not tail.ended:
                        await subscription.wait(self._poll_s)
        except OutpostError as exc:
            log.warning("event tail of %s stopped: %s", tail.dispatch_id, exc.detail)
            tail.stop(exc)
        except Exception as exc:
            log.exception("event tail of %s failed", tail.dispatch_id)
            tail.stop(exc)

    async def _read(self, dispatch_id: str, after_seq: int) -> list[EventRow]:
        async with self._store.read() as conn:
            return await event_repo.list_events(conn, dispatch_id, after_seq, PAGE_EVENTS)
