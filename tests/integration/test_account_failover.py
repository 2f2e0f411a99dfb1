"""Failover to another account of the same provider, at the claim (SQLite and PostgreSQL): a tenant whose
own key is out of quota runs the same model on the server's key when its `failover` sets `accounts`, the
server has a key, and nothing forbids it; otherwise it waits, or falls back to another model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from outpost.agents.catalog import default_catalog
from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories.tenant_providers import TenantProviderRow, upsert_tenant_provider
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.events.inprocess import InProcessBus
from outpost.ledger.metrics import LedgerMetrics
from outpost.ledger.prices import build_price_table
from outpost.ledger.settings import LedgerSettings
from outpost.ledger.settlement import Ledger
from outpost.schemas.convert import dispatch_read
from outpost.schemas.failover import FailoverSpec
from outpost.services.admission import Admission
from outpost.services.runs import RunService
from tests.integration.test_claim_admission import Queue

SERVER_KEYS = ("openai",)  # the server has a key of its own for openai, none for anthropic
CODEX = {"agent": "codex", "model": "gpt-6.1-sol"}
CLAUDE = {"agent": "claude", "model": "claude-sonnet-5-5"}


@pytest.fixture
async def queue(database_url: str) -> AsyncIterator[Queue]:
    store = Store(database_url)
    await upgrade_to_head(store)
    ledger = Ledger(build_price_table(default_catalog(), LedgerSettings()), LedgerMetrics())
    admission = Admission(default_catalog(), SERVER_KEYS)
    yield Queue(store, RunService(store, 2, InProcessBus(), ledger, admission))
    await store.dispose()


async def tenant_with_own_key(queue: Queue, provider: str, base_url: str | None = None) -> str:
    """A tenant with settings of its own for `provider` (a key; with `base_url`, an admin-set URL too)."""
    tenant = await queue.tenant()
    async with queue.store.write() as conn:
        await upsert_tenant_provider(conn, TenantProviderRow(tenant, provider, base_url, utc_now()))
    return tenant


async def provisioning_note(queue: Queue, dispatch_id: str) -> str:
    event = next(e for e in await queue.events(dispatch_id) if e.get("status") == "provisioning")
    note: str = event.get("note", "")
    return note


async def test_the_tenants_own_key_out_of_quota_runs_the_same_model_on_the_servers_key_when_allowed(
    queue: Queue,
) -> None:
    tenant = await tenant_with_own_key(queue, "openai")
    until = utc_now() + timedelta(minutes=5)
    await queue.exhaust(tenant, "openai", until)
    [allowed] = await queue.queue(tenant, 1, **CODEX, failover={"accounts": True})
    [waits] = await queue.queue(tenant, 1, **CODEX)
    [claimed] = await queue.runs.claim(8)
    assert claimed.id == allowed
    assert (claimed.model, claimed.tier) == ("gpt-6.1-sol", "balanced")
    assert claimed.failover == {"accounts": True, "account": SERVER_ACCOUNT}
    shown = dispatch_read(claimed)
    assert (shown.failover, shown.failover_account) == (FailoverSpec(accounts=True), "server")
    note = await provisioning_note(queue, allowed)
    assert note.startswith("openai quota exhausted until ")
    assert "(this tenant's own key): running on the server's key instead" in note
    held = await queue.dispatch(waits)
    assert (held.status, held.not_before) == ("queued", until)
    assert held.queue_reason is not None
    assert "this tenant's own key" in held.queue_reason
    assert dispatch_read(held).failover_account is None


Setup = dict[str, Any]
NOT_TAKEN: list[tuple[str, Setup]] = [
    ("the server's account is out of quota too", {"exhaust": [None, SERVER_ACCOUNT]}),
    ("an admin routed the tenant's calls to a URL of its own", {"base_url": "http://127.0.0.1:9/openai"}),
    ("the server has no key for the provider", {"fields": CLAUDE, "provider": "anthropic"}),
    ("the tenant has no key of its own: it is on the server's", {"own": False, "exhaust": [SERVER_ACCOUNT]}),
]


@pytest.mark.parametrize(("why", "setup"), NOT_TAKEN, ids=[why for why, _ in NOT_TAKEN])
async def test_account_failover_is_not_taken_when(queue: Queue, why: str, setup: Setup) -> None:
    provider = setup.get("provider", "openai")
    if setup.get("own", True):
        tenant = await tenant_with_own_key(queue, provider, setup.get("base_url"))
    else:
        tenant = await queue.tenant()
    until = utc_now() + timedelta(minutes=5)
    for account in setup.get("exhaust", [None]):
        await queue.exhaust(account or tenant, provider, until)
    [dispatch_id] = await queue.queue(tenant, 1, **setup.get("fields", CODEX), failover={"accounts": True})
    assert await queue.runs.claim(8) == [], why
    row = await queue.dispatch(dispatch_id)
    assert (row.status, row.not_before, row.failover) == ("queued", until, {"accounts": True})
    assert row.queue_reason is not None
    assert row.queue_reason.startswith(f"{provider} quota exhausted until ")


async def test_without_a_free_account_the_dispatch_falls_back_to_its_models_and_no_longer_says_server(
    queue: Queue,
) -> None:
    tenant = await tenant_with_own_key(queue, "openai")
    until = utc_now() + timedelta(minutes=5)
    await queue.exhaust(tenant, "openai", until)
    await queue.exhaust(SERVER_ACCOUNT, "openai", until)
    # As a retry queued again after an earlier claim moved it onto the server's key.
    earlier = {"accounts": True, "models": ["claude-sonnet-5-5"], "account": SERVER_ACCOUNT}
    [dispatch_id] = await queue.queue(tenant, 1, agent="aider", model="gpt-6.1-sol", failover=earlier)
    [claimed] = await queue.runs.claim(8)
    assert claimed.model == "claude-sonnet-5-5"
    assert claimed.failover == {"accounts": True, "models": ["claude-sonnet-5-5"]}
    assert "claude-sonnet-5-5 (anthropic)" in await provisioning_note(queue, dispatch_id)


async def test_a_dispatch_claimed_again_once_its_tenants_key_is_free_goes_back_to_that_key(
    queue: Queue,
) -> None:
    tenant = await tenant_with_own_key(queue, "openai")
    earlier = {"accounts": True, "account": SERVER_ACCOUNT}
    [dispatch_id] = await queue.queue(tenant, 1, **CODEX, failover=earlier)
    [claimed] = await queue.runs.claim(8)
    assert claimed.failover == {"accounts": True}
    assert dispatch_read(claimed).failover_account is None
    assert await provisioning_note(queue, dispatch_id) == ""
