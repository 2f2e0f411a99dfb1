"""The worker's claim on the real store (SQLite and PostgreSQL): tenant concurrency caps, provider quotas,
failover, the reasons held dispatches show, and (on PostgreSQL) claimers racing on several connections."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from outpost.agents.catalog import default_catalog
from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories import quotas as quota_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.quotas import QuotaRow
from outpost.db.repositories.tenant_providers import TenantProviderRow, upsert_tenant_provider
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.dispatch import DispatchStatus
from outpost.domain.ids import new_ulid
from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.events.inprocess import InProcessBus
from outpost.gateway.upstream_errors import ProviderFailure
from outpost.ledger.metrics import LedgerMetrics
from outpost.ledger.prices import build_price_table
from outpost.ledger.settings import LedgerSettings
from outpost.ledger.settlement import Ledger
from outpost.services.admission import Admission
from outpost.services.lifecycle import transition
from outpost.services.quotas import QuotaBook
from outpost.services.runs import RunService
from tests.integration.queue_rows import new_tenant, queued_row


@dataclass
class Queue:
    """A migrated store with tenants, dispatches queued straight into it, and the worker's claim."""

    store: Store
    runs: RunService

    async def tenant(self, cap: int | None = None) -> str:
        return await new_tenant(self.store, cap)

    async def queue(self, tenant_id: str, count: int = 1, **fields: Any) -> list[str]:
        ids = [new_ulid() for _ in range(count)]
        async with self.store.write() as conn:
            for dispatch_id in ids:
                await dispatch_repo.insert_dispatch(conn, queued_row(dispatch_id, tenant_id, **fields))
        return ids

    async def dispatch(self, dispatch_id: str) -> DispatchRow:
        async with self.store.read() as conn:
            row = await dispatch_repo.get_dispatch(conn, dispatch_id)
        assert row is not None
        return row

    async def events(self, dispatch_id: str) -> list[dict[str, Any]]:
        async with self.store.read() as conn:
            rows = await event_repo.list_events(conn, dispatch_id, 0, 1000)
        assert [row.seq for row in rows] == list(range(1, len(rows) + 1)), "event numbers have gaps"
        return [{"kind": row.kind, "at": row.created_at, **row.data} for row in rows]

    async def finish(self, dispatch_id: str) -> None:
        async with self.store.write() as conn:
            row = await dispatch_repo.get_dispatch(conn, dispatch_id)
            assert row is not None
            assert await transition(conn, row, DispatchStatus.CANCELLED) is not None

    async def exhaust(self, account: str, provider: str, until: datetime) -> None:
        async with self.store.write() as conn:
            row = QuotaRow(account, provider, until, "rate limit reached", utc_now())
            await quota_repo.record_exhausted(conn, self.store.dialect, row)


def _run_service(store: Store) -> RunService:
    ledger = Ledger(build_price_table(default_catalog(), LedgerSettings()), LedgerMetrics())
    return RunService(store, 2, InProcessBus(), ledger, Admission(default_catalog()))


@pytest.fixture
async def queue(database_url: str) -> AsyncIterator[Queue]:
    store = Store(database_url)
    await upgrade_to_head(store)
    yield Queue(store, _run_service(store))
    await store.dispose()


def _held(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["kind"] == "status" and "held" in event]


async def test_a_tenant_capped_at_one_gets_one_dispatch_claimed_and_the_others_say_why_once(
    queue: Queue,
) -> None:
    tenant = await queue.tenant(cap=1)
    first, second, third = await queue.queue(tenant, 3)
    claimed = await queue.runs.claim(8)
    assert [row.id for row in claimed] == [first]
    for _ in range(3):  # later claims find the same reason: nothing new to say
        assert await queue.runs.claim(8) == []
    for waiting in (second, third):
        row = await queue.dispatch(waiting)
        assert row.status == "queued"
        assert row.queue_reason is not None
        assert "max_concurrent_dispatches (1)" in row.queue_reason
        held = _held(await queue.events(waiting))
        assert len(held) == 1, held
        assert held[0]["held"] == "tenant_cap"
        assert held[0]["note"] == row.queue_reason
    await queue.finish(first)
    assert [row.id for row in await queue.runs.claim(8)] == [second]  # in the order they were queued
    row = await queue.dispatch(second)
    assert (row.status, row.queue_reason, row.attempt) == ("provisioning", None, 1)


async def test_a_tenant_at_its_cap_does_not_hold_back_other_tenants_queued_after_it(queue: Queue) -> None:
    capped, free = await queue.tenant(cap=2), await queue.tenant()
    capped_ids = await queue.queue(capped, 10)
    free_ids = await queue.queue(free, 3)
    # Two free slots: a claim reading only the oldest two would take the capped tenant's pair; the
    # free tenant's come next even though eight older dispatches are still queued.
    assert {row.id for row in await queue.runs.claim(2)} == set(capped_ids[:2])
    assert [row.id for row in await queue.runs.claim(3)] == free_ids
    for waiting in capped_ids[2:]:
        assert (await queue.dispatch(waiting)).queue_reason is not None


async def test_a_cap_counts_dispatches_already_running(queue: Queue) -> None:
    tenant = await queue.tenant(cap=3)
    running = await queue.queue(tenant, 2, status="running", attempt=1)
    queued = await queue.queue(tenant, 3)
    assert [row.id for row in await queue.runs.claim(8)] == queued[:1]
    await queue.finish(running[0])
    assert [row.id for row in await queue.runs.claim(8)] == queued[1:2]


async def test_a_dispatch_whose_provider_account_is_out_of_quota_waits_until_the_quota_ends(
    queue: Queue,
) -> None:
    tenant = await queue.tenant()
    until = utc_now() + timedelta(seconds=1)
    await queue.exhaust(SERVER_ACCOUNT, "openai", until)
    [held] = await queue.queue(tenant, 1, agent="codex", model="gpt-6.1-sol")
    [shell] = await queue.queue(tenant, 1)
    assert [row.id for row in await queue.runs.claim(8)] == [shell]  # not stuck behind the held one
    row = await queue.dispatch(held)
    assert row.status == "queued"
    assert row.not_before == until
    assert row.queue_reason is not None
    assert row.queue_reason.startswith("openai quota exhausted until ")
    assert "server's key" in row.queue_reason
    assert await queue.runs.claim(8) == []
    await asyncio.sleep(max(0.0, (until - utc_now()).total_seconds()))  # the quota's own end
    assert [row.id for row in await queue.runs.claim(8)] == [held]
    events = await queue.events(held)
    assert len(_held(events)) == 1
    claimed_at = next(e["at"] for e in events if e.get("status") == "provisioning")
    assert claimed_at >= until


async def test_a_tenants_own_key_out_of_quota_holds_only_that_tenant(queue: Queue) -> None:
    own, other = await queue.tenant(), await queue.tenant()
    async with queue.store.write() as conn:
        await upsert_tenant_provider(conn, TenantProviderRow(own, "openai", None, utc_now()))
    await queue.exhaust(own, "openai", utc_now() + timedelta(minutes=5))
    [held] = await queue.queue(own, 1, agent="codex", model="gpt-6.1-sol")
    [runs] = await queue.queue(other, 1, agent="codex", model="gpt-6.1-sol")
    assert [row.id for row in await queue.runs.claim(8)] == [runs]
    reason = (await queue.dispatch(held)).queue_reason
    assert reason is not None
    assert "this tenant's own key" in reason


async def test_failover_runs_the_dispatch_on_the_first_fallback_whose_account_is_not_out_of_quota(
    queue: Queue,
) -> None:
    tenant = await queue.tenant()
    until = utc_now() + timedelta(minutes=5)
    await queue.exhaust(SERVER_ACCOUNT, "anthropic", until)
    await queue.exhaust(SERVER_ACCOUNT, "openai", until)
    failover = {"models": ["gpt-6.1-sol"], "tiers": ["fast"]}
    [dispatch_id] = await queue.queue(tenant, 1, agent="aider", model="claude-sonnet-5-5", failover=failover)
    [claimed] = await queue.runs.claim(8)
    # gpt-6.1-sol's account is out of quota too; the fast tier's anthropic model is on the exhausted
    # account; the next provider aider drives has a fast model on a free account.
    assert (claimed.model, claimed.tier) == ("gemini-3.1-flash-lite", "fast")
    provisioning = next(e for e in await queue.events(dispatch_id) if e.get("status") == "provisioning")
    assert "anthropic quota exhausted" in provisioning["note"]
    assert "gemini-3.1-flash-lite (gemini)" in provisioning["note"]


async def test_a_dispatch_without_a_free_fallback_waits_for_its_own_quota(queue: Queue) -> None:
    tenant = await queue.tenant()
    until = utc_now() + timedelta(minutes=5)
    await queue.exhaust(SERVER_ACCOUNT, "anthropic", until)
    await queue.exhaust(SERVER_ACCOUNT, "openai", until + timedelta(minutes=1))
    failover = {"models": ["gpt-6.1-sol"]}
    [dispatch_id] = await queue.queue(tenant, 1, agent="aider", model="claude-sonnet-5-5", failover=failover)
    assert await queue.runs.claim(8) == []
    row = await queue.dispatch(dispatch_id)
    assert (row.model, row.not_before) == ("claude-sonnet-5-5", until)


async def test_a_later_success_on_the_account_clears_its_quota_and_frees_the_dispatches_it_held(
    queue: Queue,
) -> None:
    book = QuotaBook(queue.store)
    tenant = await queue.tenant()
    retry_at = utc_now() + timedelta(hours=1)
    book.failed(SERVER_ACCOUNT, "openai", ProviderFailure("quota", 429, "slow down", retry_at))
    await book.flush()
    assert await book.exhausted_until(SERVER_ACCOUNT, "openai") == retry_at
    [dispatch_id] = await queue.queue(tenant, 1, agent="codex", model="gpt-6.1-sol")
    assert await queue.runs.claim(8) == []
    book.succeeded(SERVER_ACCOUNT, "openai")
    await book.flush()
    assert await book.exhausted_until(SERVER_ACCOUNT, "openai") is None
    async with queue.store.read() as conn:
        assert await quota_repo.get(conn, SERVER_ACCOUNT, "openai") is None
    assert [row.id for row in await queue.runs.claim(8)] == [dispatch_id]


async def test_a_shorter_quota_does_not_cut_a_longer_one_short(queue: Queue) -> None:
    long_until = utc_now() + timedelta(hours=5)
    await queue.exhaust(SERVER_ACCOUNT, "openai", long_until)
    await queue.exhaust(SERVER_ACCOUNT, "openai", utc_now() + timedelta(seconds=30))
    async with queue.store.read() as conn:
        row = await quota_repo.get(conn, SERVER_ACCOUNT, "openai")
    assert row is not None
    assert row.exhausted_until == long_until


@pytest.mark.postgres
async def test_claimers_racing_on_postgresql_never_run_more_than_the_tenants_cap(pg_database: str) -> None:
    cap, total, claimers = 2, 40, 4
    store = Store(pg_database)
    await upgrade_to_head(store)
    try:
        queue = Queue(store, _run_service(store))
        tenant = await queue.tenant(cap=cap)
        ids = await queue.queue(tenant, total)
        services = [_run_service(store) for _ in range(claimers)]
        finishing: set[asyncio.Task[None]] = set()

        async def finish_soon(dispatch_id: str) -> None:
            await asyncio.sleep(random.uniform(0, 0.02))
            await queue.finish(dispatch_id)

        async def claim_loop(runs: RunService) -> None:
            while not await _all_claimed(store, ids):
                for row in await runs.claim(3):
                    finishing.add(asyncio.create_task(finish_soon(row.id)))
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(*(claim_loop(runs) for runs in services)), 60)
        await asyncio.gather(*finishing)
        intervals = [await _held_interval(queue, dispatch_id) for dispatch_id in ids]
        assert _most_at_once(intervals) == cap
    finally:
        await store.dispose()


async def _all_claimed(store: Store, ids: list[str]) -> bool:
    async with store.read() as conn:
        rows = [await dispatch_repo.get_dispatch(conn, dispatch_id) for dispatch_id in ids]
    return all(row is not None and row.status != "queued" for row in rows)


async def _held_interval(queue: Queue, dispatch_id: str) -> tuple[datetime, datetime]:
    """When a claim took the dispatch and when it ended, as its status events say. A claim counts the
    running dispatches after every earlier end has committed, and stamps its event later still."""
    events = await queue.events(dispatch_id)
    started = [e["at"] for e in events if e.get("status") == "provisioning"]
    ended = [e["at"] for e in events if e.get("status") == "cancelled"]
    assert len(started) == len(ended) == 1, events
    return started[0], ended[0]


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most
