"""The event bus seam: it wakes readers when events of a dispatch were committed.

Events are durable rows first (`dispatch_events`, numbered per dispatch). The bus carries no event, only
the news that dispatch D of tenant T has events up to sequence number N. A reader subscribes, then reads
the store after the last event it has, then waits for news and reads again:

    async with bus.subscribe(tenant_id, dispatch_id) as subscription:   # dispatch_id None: whole tenant
        while ...:
            ...read the store after the last seq you have...
            if not await subscription.wait(timeout_s=2.0):
                ...no news in time: read again anyway (or give up)...

Subscribing before the first read means no wake-up can fall between the read and the wait. A lost
wake-up (a PostgreSQL connection that dropped, a process that died between commit and publish) only
delays an event until the reader reads again on its own, so readers wait with a timeout. Writers
publish after their transaction committed, never from inside it, and publishing never waits.

Backends: `inprocess` (the API and the worker in one process: the embedded default) and `postgres`
(LISTEN/NOTIFY, for workers in other processes or on other machines). Both pass the contract suite in
tests/contract/test_event_bus_contract.py; `factory.build_event_bus` picks one from the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EventNotice:
    """Dispatch `dispatch_id` of tenant `tenant_id` has committed events up to `seq`."""

    tenant_id: str
    dispatch_id: str
    seq: int


class Subscription(Protocol):
    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for news of the subscribed dispatch (or tenant).

        True at once when news arrived since the subscription opened or since the last wait that returned
        True; else True when news arrives, False when `timeout_s` passes first (None: no limit). News is
        a reason to read the store again, not a promise of new rows: several notices may wake the reader
        once, and a backend may wake everyone after it reconnected. Raises Unavailable once the bus is
        closed (the server is stopping), also in a wait already under way.
        """


class EventBus(Protocol):
    @property
    def name(self) -> str:
        """The backend's name as the settings spell it."""

    @property
    def subscription_count(self) -> int:
        """Subscriptions of this process that are open now (for tests and metrics)."""

    async def start(self) -> None:
        """Connect, where the backend needs a connection. Raises StoreUnavailable when the database
        cannot be reached."""

    async def close(self) -> None:
        """Stop: every wait raises Unavailable from now on, and later publishes are dropped. Idempotent."""

    def publish(self, notices: Iterable[EventNotice]) -> None:
        """Wake the readers of these dispatches and of their tenants, in every process that shares the
        bus. Call it after the transaction that wrote the events committed. Never raises, never waits:
        delivery to other processes happens in the background."""

    def subscribe(
        self, tenant_id: str, dispatch_id: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """A subscription to one dispatch of a tenant, or with `dispatch_id` None to every dispatch of
        the tenant, open until the block ends. Raises Unavailable when the bus is closed."""
