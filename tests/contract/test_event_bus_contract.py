"""The contract every event bus backend keeps. Add each new backend to `bus_pair`.

Each test gets a publishing bus and a subscribing bus. In-process they are one object; for PostgreSQL
they are two buses with connections of their own on one database, as two servers would be, so every
wake-up the subscriber sees travelled through NOTIFY and LISTEN.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
import pytest

from outpost.errors import Unavailable
from outpost.events.base import EventBus, EventNotice
from outpost.events.inprocess import InProcessBus
from outpost.events.postgres import PostgresBus, libpq_url

NO_NEWS_S = 0.2
"""How long a wait must stay quiet to show that no wake-up came (a negative can only be timed)."""
NEWS_S = 10.0


@dataclass
class BusPair:
    publisher: EventBus
    subscriber: EventBus


@pytest.fixture(params=["inprocess", pytest.param("postgres", marks=pytest.mark.postgres)])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[BusPair]:
    if request.param == "inprocess":
        bus = InProcessBus()
        pair = BusPair(bus, bus)
    else:
        url: str = request.getfixturevalue("pg_database")
        pair = BusPair(PostgresBus(url), PostgresBus(url))
    for bus in {id(pair.publisher): pair.publisher, id(pair.subscriber): pair.subscriber}.values():
        await bus.start()
    yield pair
    await pair.publisher.close()
    await pair.subscriber.close()


async def test_a_subscriber_wakes_for_its_dispatch(buses: BusPair) -> None:
    async with buses.subscriber.subscribe("t1", "d1") as subscription:
        buses.publisher.publish([EventNotice("t1", "d1", 5)])
        assert await subscription.wait(NEWS_S) is True


async def test_news_that_came_before_the_wait_is_not_lost(buses: BusPair) -> None:
    async with buses.subscriber.subscribe("t1", "d1") as subscription:
        buses.publisher.publish([EventNotice("t1", "d1", 1)])
        buses.publisher.publish([EventNotice("t1", "d1", 2)])
        assert await subscription.wait(NEWS_S) is True


async def test_a_wait_without_news_times_out(buses: BusPair) -> None:
    async with buses.subscriber.subscribe("t1", "d1") as subscription:
        assert await subscription.wait(NO_NEWS_S) is False


async def test_other_dispatches_and_tenants_do_not_wake_a_subscriber(buses: BusPair) -> None:
    async with (
        buses.subscriber.subscribe("t1", "d1") as subscription,
        buses.subscriber.subscribe("t1", "d2") as witness,
    ):
        buses.publisher.publish([EventNotice("t2", "d1", 1), EventNotice("t1", "d2", 1)])
        assert await witness.wait(NEWS_S) is True  # the notices arrived...
        assert await subscription.wait(NO_NEWS_S) is False  # ...and none was for d1 of t1


async def test_a_tenant_subscription_wakes_for_every_dispatch_of_the_tenant_only(buses: BusPair) -> None:
    async with buses.subscriber.subscribe("t1") as tenant_wide, buses.subscriber.subscribe("t2") as other:
        buses.publisher.publish([EventNotice("t1", "d7", 3)])
        assert await tenant_wide.wait(NEWS_S) is True
        assert await other.wait(NO_NEWS_S) is False
        buses.publisher.publish([EventNotice("t1", "d8", 1)])
        assert await tenant_wide.wait(NEWS_S) is True


async def test_a_burst_of_notices_wakes_a_subscriber_a_few_times_not_once_each(buses: BusPair) -> None:
    async with buses.subscriber.subscribe("t1", "d1") as subscription:
        buses.publisher.publish(EventNotice("t1", "d1", seq) for seq in range(1, 200))
        buses.publisher.publish([EventNotice("t1", "d1", 200)])
        assert await subscription.wait(NEWS_S) is True
        wakeups = 1
        while await subscription.wait(NO_NEWS_S):
            wakeups += 1
        # In process: one. Over PostgreSQL the burst is coalesced to one notice per dispatch, and may
        # arrive in a second payload when the first was already on its way.
        assert wakeups <= 2


async def test_subscriptions_are_counted_until_their_block_ends(buses: BusPair) -> None:
    before = buses.subscriber.subscription_count
    async with buses.subscriber.subscribe("t1", "d1"), buses.subscriber.subscribe("t1"):
        assert buses.subscriber.subscription_count == before + 2
    assert buses.subscriber.subscription_count == before


async def test_a_cancelled_wait_leaves_no_subscription(buses: BusPair) -> None:
    before = buses.subscriber.subscription_count

    async def follow() -> None:
        async with buses.subscriber.subscribe("t1", "d1") as subscription:
            await subscription.wait()

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    assert buses.subscriber.subscription_count == before + 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert buses.subscriber.subscription_count == before


async def test_closing_the_bus_ends_waits_and_drops_later_publishes(buses: BusPair) -> None:
    async with buses.subscriber.subscribe("t1", "d1") as subscription:
        waiting = asyncio.create_task(subscription.wait())
        await asyncio.sleep(0)
        await buses.subscriber.close()
        with pytest.raises(Unavailable):
            await waiting
        buses.subscriber.publish([EventNotice("t1", "d1", 1)])  # no error, no effect
        with pytest.raises(Unavailable):
            await subscription.wait(NO_NEWS_S)
    with pytest.raises(Unavailable):
        async with buses.subscriber.subscribe("t1", "d1"):
            pass


@pytest.mark.postgres
async def test_the_postgres_bus_listens_again_after_its_connection_dies(pg_database: str) -> None:
    publisher, subscriber = PostgresBus(pg_database), PostgresBus(pg_database)
    await publisher.start()
    await subscriber.start()
    try:
        async with subscriber.subscribe("t1", "d1") as subscription:
            killed = await _terminate_listeners(pg_database)
            assert killed == 2
            # Notices sent while the listener was down are lost; the reconnect wakes everyone instead.
            assert await subscription.wait(NEWS_S) is True
            publisher.publish([EventNotice("t1", "d1", 9)])
            assert await subscription.wait(NEWS_S) is True
    finally:
        await publisher.close()
        await subscriber.close()


async def _terminate_listeners(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN outpost_events'"
        )
        return len(await cursor.fetchall())
