"""The PostgreSQL event bus: LISTEN/NOTIFY, so that a server hears of events that workers in other
processes (or on other machines) committed.

Publishing wakes this process's readers at once and queues the notices; a background task sends what is
queued, coalesced per dispatch, as NOTIFY payloads over its own autocommit connection, and one LISTEN
connection hands what other processes publish to the local subscriptions. Payloads carry this process's
origin, so its own echoes are ignored. Nothing here waits on a reader, and nothing a writer does waits on
PostgreSQL's delivery.

A lost notification (a send that failed, a connection that dropped) at worst delays an event until the
readers re-read on their own. After the LISTEN connection comes back, every local subscription is woken:
notices may have been missed while it was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager

import psycopg
from sqlalchemy.engine import make_url

from outpost.errors import StoreUnavailable
from outpost.events.base import EventNotice, Subscription
from outpost.events.inprocess import InProcessBus

log = logging.getLogger(__name__)

CHANNEL = "outpost_events"
"""The one channel every process listens on (spelled out in the statements below)."""
NOTICES_PER_PAYLOAD = 80
"""Each notice takes about 70 bytes of JSON; PostgreSQL refuses payloads of 8000 bytes or more."""
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)
CONNECT_TIMEOUT_S = 5
_NOTIFY = "SELECT pg_notify('outpost_events', payload) FROM unnest(%s::text[]) AS payload"
_Outbox = dict[tuple[str, str], int]


def libpq_url(database_url: str) -> str:
    """The libpq form of a SQLAlchemy URL (`postgresql+psycopg://…` → `postgresql://…`)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBus:
    def __init__(self, database_url: str) -> None:
        self._conninfo = libpq_url(database_url)
        self._local = InProcessBus()
        self._origin = secrets.token_hex(8)
        self._outbox: _Outbox = {}
        self._queued = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def name(self) -> str:
        return "postgres"

    @property
    def subscription_count(self) -> int:
        return self._local.subscription_count

    async def start(self) -> None:
        listener = await self._listen()
        self._tasks = [asyncio.create_task(self._receive(listener)), asyncio.create_task(self._send())]

    async def close(self) -> None:
        self._closed = True
        await self._local.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def publish(self, notices: Iterable[EventNotice]) -> None:
        if self._closed:
            return
        notices = list(notices)
        self._local.publish(notices)
        _merge(self._outbox, {(n.tenant_id, n.dispatch_id): n.seq for n in notices})
        self._queued.set()

    def subscribe(
        self, tenant_id: str, dispatch_id: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        return self._local.subscribe(tenant_id, dispatch_id)

    async def _listen(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        """A connection that LISTENs on the channel. Raises StoreUnavailable when it cannot be made."""
        try:
            conn = await self._connect()
            await conn.execute("LISTEN outpost_events")
        except psycopg.Error as exc:
            raise StoreUnavailable(f"the event bus cannot listen on the database: {exc}") from exc
        return conn

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )

    async def _receive(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """Hand other processes' notices to local subscriptions; reconnect (and wake everyone) on loss."""
        while True:
            try:
                async for notification in conn.notifies():
                    self._deliver(notification.payload)
            except psycopg.Error as exc:
                log.warning("event bus: the LISTEN connection failed (%s); reconnecting", exc)
            finally:
                await conn.close()
            conn = await self._reconnect()
            self._local.wake_all()

    async def _reconnect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        attempt = 0
        while True:
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            try:
                return await self._listen()
            except StoreUnavailable as exc:
                log.warning("event bus: %s", exc.detail)
            attempt += 1

    def _deliver(self, payload: str) -> None:
        notices = _parse_payload(payload, self._origin)
        if notices:
            self._local.publish(notices)

    async def _send(self) -> None:
        """Send queued notices as NOTIFYs, one statement per batch; on failure keep them and retry."""
        conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        failures = 0
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                batch, self._outbox = self._outbox, {}
                try:
                    conn = conn or await self._connect()
                    await conn.execute(_NOTIFY, (self._payloads(batch),))
                    failures = 0
                except psycopg.Error as exc:
                    log.warning("event bus: sending notices failed (%s); retrying", exc)
                    await _discard(conn)
                    conn = None
                    _merge(self._outbox, batch)
                    self._queued.set()
                    await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                    failures += 1
        finally:
            await _discard(conn)

    def _payloads(self, batch: _Outbox) -> list[str]:
        items = [[tenant_id, dispatch_id, seq] for (tenant_id, dispatch_id), seq in batch.items()]
        return [
            json.dumps({"o": self._origin, "n": items[start : start + NOTICES_PER_PAYLOAD]})
            for start in range(0, len(items), NOTICES_PER_PAYLOAD)
        ]


def _parse_payload(payload: str, own_origin: str) -> list[EventNotice]:
    """The notices of a payload another process sent; none for this process's own echoes and for
    payloads that are not ours (anyone with access to the database may NOTIFY on the channel)."""
    try:
        body = json.loads(payload)
        if body["o"] == own_origin:
            return []
        return [EventNotice(str(tenant), str(dispatch), int(seq)) for tenant, dispatch, seq in body["n"]]
    except (ValueError, TypeError, KeyError):
        log.debug("event bus: ignored a payload that is not a list of notices")
        return []


def _merge(outbox: _Outbox, notices: dict[tuple[str, str], int]) -> None:
    for key, seq in notices.items():
        outbox[key] = max(outbox.get(key, 0), seq)


async def _discard(conn: psycopg.AsyncConnection[tuple[object, ...]] | None) -> None:
    if conn is not None:
        await conn.close()
