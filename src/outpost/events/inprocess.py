"""The in-process event bus: wake-ups between the worker and the API of one process (embedded default).

Also the local half of the PostgreSQL bus, which hands it what other processes published.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from outpost.errors import Unavailable
from outpost.events.base import EventNotice

_CLOSED = "the event bus is closed: the server is stopping"
_Key = tuple[str, str | None]


class LocalSubscription:
    """A level-triggered wake-up flag: news sets it, a wait that sees it clears it."""

    __slots__ = ("_closed", "_news")

    def __init__(self) -> None:
        self._news = asyncio.Event()
        self._closed = False

    def notify(self) -> None:
        self._news.set()

    def close(self) -> None:
        self._closed = True
        self._news.set()

    async def wait(self, timeout_s: float | None = None) -> bool:
        if not self._news.is_set():
            try:
                async with asyncio.timeout(timeout_s):
                    await self._news.wait()
            except TimeoutError:
                return False
        if self._closed:
            raise Unavailable(_CLOSED)
        self._news.clear()
        return True


class InProcessBus:
    """Subscriptions by (tenant, dispatch) and by (tenant, None); publishing sets their flags."""

    def __init__(self) -> None:
        self._subscriptions: dict[_Key, set[LocalSubscription]] = {}
        self._closed = False

    @property
    def name(self) -> str:
        return "inprocess"

    @property
    def subscription_count(self) -> int:
        return sum(len(group) for group in self._subscriptions.values())

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        self._closed = True
        for group in self._subscriptions.values():
            for subscription in group:
                subscription.close()

    def publish(self, notices: Iterable[EventNotice]) -> None:
        if self._closed:
            return
        for notice in notices:
            for key in ((notice.tenant_id, notice.dispatch_id), (notice.tenant_id, None)):
                for subscription in self._subscriptions.get(key, ()):
                    subscription.notify()

    def wake_all(self) -> None:
        """Wake every subscription (news may have been missed, e.g. while a connection was down)."""
        for group in self._subscriptions.values():
            for subscription in group:
                subscription.notify()

    @asynccontextmanager
    async def subscribe(
        self, tenant_id: str, dispatch_id: str | None = None
    ) -> AsyncIterator[LocalSubscription]:
        if self._closed:
            raise Unavailable(_CLOSED)
        key = (tenant_id, dispatch_id)
        subscription = LocalSubscription()
        self._subscriptions.setdefault(key, set()).add(subscription)
        try:
            yield subscription
        finally:
            # Synchronous on purpose: a stream cancelled mid-write leaves nothing behind.
            group = self._subscriptions.get(key)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._subscriptions[key]
