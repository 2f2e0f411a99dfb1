"""The tenant-wide event feed on the real store: commit order, tenancy, bounds, and (on PostgreSQL)
transactions that commit out of the order of their ids, which a reader must never skip."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import event_feed as feed_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.event_feed import FeedPage, FeedPosition
from outpost.db.repositories.events import EventRow
from outpost.db.repositories.tenants import TenantRow, insert_tenant
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid


@dataclass
class FeedWorld:
    store: Store
    tenant_id: str
    other_tenant_id: str

    async def new_dispatch(self, tenant_id: str | None = None) -> str:
        dispatch_id = new_ulid()
        async with self.store.write() as conn:
            await dispatch_repo.insert_dispatch(conn, _dispatch(dispatch_id, tenant_id or self.tenant_id))
        return dispatch_id

    async def write(self, *events: tuple[str, int]) -> None:
        """(dispatch id, seq) events, all in one transaction."""
        async with self.store.write() as conn:
            await event_repo.insert_events(conn, [_event(dispatch_id, seq) for dispatch_id, seq in events])

    async def read(
        self, after: FeedPosition, dispatch_ids: tuple[str, ...] = (), limit: int = 100
    ) -> FeedPage:
        async with self.store.read() as conn:
            return await feed_repo.read_feed(
                conn, self.store.dialect, self.tenant_id, after, dispatch_ids, limit
            )

    async def read_settled(
        self, after: FeedPosition, dispatch_ids: tuple[str, ...] = (), limit: int = 100
    ) -> FeedPage:
        """Read again while events are withheld: on PostgreSQL any transaction open on the server (other
        tests' databases included) holds the feed back until it ends."""
        deadline = asyncio.get_running_loop().time() + 10
        while (page := await self.read(after, dispatch_ids, limit)).withheld:
            assert asyncio.get_running_loop().time() < deadline, "the feed stayed held back"
            await asyncio.sleep(0.01)
        return page

    async def start(self) -> FeedPosition:
        async with self.store.read() as conn:
            return (await feed_repo.feed_bounds(conn, self.store.dialect)).start


def _keys(page: FeedPage) -> list[tuple[str, int]]:
    return [(found.event.dispatch_id, found.event.seq) for found in page.events]


def _event(dispatch_id: str, seq: int) -> EventRow:
    return EventRow(dispatch_id, seq, utc_now(), "log", {"stream": "stdout", "line": f"{seq}"})


def _dispatch(dispatch_id: str, tenant_id: str) -> DispatchRow:
    created = utc_now() - timedelta(minutes=1)
    return DispatchRow(
        id=dispatch_id, tenant_id=tenant_id, status="running", version=1, attempt=1, event_seq=0,
        agent="shell", task="true", tier="balanced", model=None, timeout_s=60, env={}, labels={},
        max_cost_micro_usd=None, limits=None, egress_allow=None, idempotency_key=None, request_sha256=None,
        created_at=created, started_at=created, finished_at=None, exit_code=None, result=None,
        failure_reason=None, failure_detail=None, input_tokens=0, output_tokens=0, cache_read_tokens=0,
        cache_write_tokens=0, cost_micro_usd=0,
    )  # fmt: skip


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[FeedWorld]:
    store = Store(database_url)
    await upgrade_to_head(store)
    tenants = [TenantRow(id=new_ulid(), name=name, created_at=utc_now()) for name in ("feed", "other")]
    async with store.write() as conn:
        for tenant in tenants:
            await insert_tenant(conn, tenant)
    yield FeedWorld(store, tenants[0].id, tenants[1].id)
    await store.dispose()


async def test_the_feed_holds_the_tenants_events_in_commit_order_and_resumes_after_any_of_them(
    world: FeedWorld,
) -> None:
    start = await world.start()
    first, second = await world.new_dispatch(), await world.new_dispatch()
    foreign = await world.new_dispatch(world.other_tenant_id)
    await world.write((second, 1), (first, 1))  # one transaction: ordered by dispatch, then seq
    await world.write((foreign, 1))
    await world.write((first, 2), (first, 3))
    await world.write((second, 2))
    page = await world.read_settled(start)
    expected = [*sorted([(second, 1), (first, 1)]), (first, 2), (first, 3), (second, 2)]
    assert _keys(page) == expected
    assert not page.withheld
    positions = [found.position for found in page.events]
    assert positions == sorted(positions, key=lambda p: (p.txn, p.dispatch_id or "", p.seq))
    for index, position in enumerate(positions):
        assert _keys(await world.read_settled(position)) == expected[index + 1 :]
    assert _keys(await world.read_settled(start, limit=2)) == expected[:2]
    assert _keys(await world.read_settled(start, dispatch_ids=(second,))) == [(second, 1), (second, 2)]


async def test_a_feed_that_starts_now_sees_every_later_event_and_positions_past_the_end_are_future(
    world: FeedWorld,
) -> None:
    dispatch_id = await world.new_dispatch()
    await world.write((dispatch_id, 1))
    start = await world.start()
    await world.write((dispatch_id, 2))
    page = await world.read_settled(start)
    if world.store.dialect == "sqlite":
        assert _keys(page) == [(dispatch_id, 2)]
    else:
        # PostgreSQL starts at the oldest transaction still open anywhere on the server: an event
        # committed just before may come too, but none after the start can be missed.
        assert _keys(page) in ([(dispatch_id, 2)], [(dispatch_id, 1), (dispatch_id, 2)])
    async with world.store.read() as conn:
        bounds = await feed_repo.feed_bounds(conn, world.store.dialect)
    assert page.events[-1].position.txn < bounds.next_txn


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_transaction_committing_after_a_newer_one_is_not_skipped(world: FeedWorld) -> None:
    """PostgreSQL: T1 takes its transaction id first but commits last. A reader in between must not
    move past T2's event, or it would never see T1's, which sorts before it."""
    older, newer = await world.new_dispatch(), await world.new_dispatch()
    start = await world.start()
    older_wrote, older_may_commit = asyncio.Event(), asyncio.Event()

    async def older_transaction() -> None:
        async with world.store.write() as conn:
            await event_repo.insert_events(conn, [_event(older, 1)])
            older_wrote.set()
            await older_may_commit.wait()

    t1 = asyncio.create_task(older_transaction())
    await older_wrote.wait()
    await world.write((newer, 1))  # T2: a newer transaction id, committed first
    meanwhile = await world.read(start)
    assert _keys(meanwhile) == []
    assert meanwhile.withheld
    older_may_commit.set()
    await t1
    assert _keys(await world.read_settled(start)) == [(older, 1), (newer, 1)]
