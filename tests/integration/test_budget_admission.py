"""A tenant's monthly budget: set by admins over the API and CLI, and checked when a dispatch is submitted
(402 with what remains) against the month's ledger rows and the running cost of unsettled dispatches."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from outpost.db.tables import dispatches, ledger_entries
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.services.tenant_spend import month_start
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_invalid, assert_problem, list_all
from tests.integration.test_tenant_policy import run_cli


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})


async def tenant_id_of(server: Server, headers: dict[str, str]) -> str:
    response = await server.client.get("/v1/keys", headers=headers)
    assert response.status_code == 200, response.text
    tenant_id: str = response.json()[0]["tenant_id"]
    return tenant_id


async def set_budget(server: Server, admin: dict[str, str], tenant_id: str, usd: float | None) -> None:
    response = await server.client.patch(
        f"/v1/tenants/{tenant_id}", json={"monthly_budget_usd": usd}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["monthly_budget_usd"] == usd


async def charge(server: Server, tenant_id: str, micro_usd: int, *, last_month: bool = False) -> None:
    """A ledger row, as settlement writes them."""
    now = utc_now()
    when = month_start(now) - timedelta(seconds=1) if last_month else now
    async with server.container.store.write() as conn:
        await conn.execute(
            insert(ledger_entries).values(
                id=new_ulid(), tenant_id=tenant_id, kind="tokens", cost_micro_usd=micro_usd, prices="test",
                occurred_at=when,
            )
        )  # fmt: skip


async def running_with_cost(server: Server, dispatch_id: str, micro_usd: int) -> None:
    """The dispatch as a worker holds it while its run is metered."""
    async with server.container.store.write() as conn:
        await conn.execute(
            update(dispatches)
            .where(dispatches.c.id == dispatch_id)
            .values(status="running", cost_micro_usd=micro_usd)
        )


async def post(server: Server, headers: dict[str, str], **fields: Any) -> Any:
    body = {"agent": "shell", "task": "true", **fields}
    return await server.client.post("/v1/dispatches", json=body, headers=headers)


def assert_over_budget(response: Any, remaining_usd: float, budget_usd: float) -> dict[str, Any]:
    body = assert_problem(response, 402)
    assert body["type"] == "urn:outpost:problem:budget-exceeded"
    assert (body["remaining_usd"], body["budget_usd"]) == (pytest.approx(remaining_usd), budget_usd)
    return body


async def test_a_dispatch_is_refused_with_402_and_what_remains_once_the_budget_cannot_cover_it(
    server: Server,
) -> None:
    admin, tenant, other = (
        await server.new_tenant(admin=True),
        await server.new_tenant(),
        await server.new_tenant(),
    )
    tenant_id = await tenant_id_of(server, tenant)
    await set_budget(server, admin, tenant_id, 1.0)
    await charge(server, tenant_id, 600_000)
    await charge(server, tenant_id, 5_000_000, last_month=True)  # another month: not counted
    running = await post(server, tenant)
    assert running.status_code == 202, running.text
    await running_with_cost(server, running.json()["id"], 100_000)
    body = assert_over_budget(await post(server, tenant, max_cost_usd=0.31), 0.3, 1.0)
    assert body["detail"] == (
        "max_cost_usd $0.31 is more than the $0.30 left of the tenant's monthly budget of $1.00; "
        "ask for at most that"
    )
    accepted = await post(server, tenant, max_cost_usd=0.3, labels={"n": "2"})
    assert accepted.status_code == 202, accepted.text
    await charge(server, tenant_id, 300_000)
    body = assert_over_budget(await post(server, tenant), 0.0, 1.0)
    assert body["detail"].startswith("the tenant's monthly budget of $1.00 is spent ($1.00 this month)")
    assert len(await list_all(server.client, tenant)) == 2, "a refused dispatch was stored"
    assert (await post(server, other)).status_code == 202, "another tenant's budget applied"
    await set_budget(server, admin, tenant_id, None)
    assert (await post(server, tenant)).status_code == 202


async def test_a_replayed_submit_is_answered_even_after_the_budget_is_spent(server: Server) -> None:
    admin, tenant = await server.new_tenant(admin=True), await server.new_tenant()
    tenant_id = await tenant_id_of(server, tenant)
    await set_budget(server, admin, tenant_id, 0.5)
    key = {**tenant, "Idempotency-Key": "once"}
    first = await post(server, key)
    assert first.status_code == 202, first.text
    await charge(server, tenant_id, 500_000)
    replayed = await post(server, key)
    assert replayed.json()["id"] == first.json()["id"]
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert_over_budget(await post(server, tenant), 0.0, 0.5)


async def test_a_zero_budget_refuses_everything_and_a_dispatch_may_ask_for_exactly_what_remains(
    server: Server,
) -> None:
    admin, tenant = await server.new_tenant(admin=True), await server.new_tenant()
    tenant_id = await tenant_id_of(server, tenant)
    await set_budget(server, admin, tenant_id, 0)
    assert_over_budget(await post(server, tenant), 0.0, 0.0)
    await set_budget(server, admin, tenant_id, 0.25)
    assert (await post(server, tenant, max_cost_usd=0.25)).status_code == 202


BAD_BUDGETS = [
    ("negative", -0.01),
    ("absurd", 10_000_000.01),
    ("huge", 1e308),
    ("a string", "5"),
    ("a boolean", True),
    ("an object", {"usd": 5}),
]


@pytest.mark.parametrize(("what", "amount"), BAD_BUDGETS, ids=[what for what, _ in BAD_BUDGETS])
async def test_a_bad_budget_is_a_422_naming_the_field_and_changes_nothing(
    server: Server, what: str, amount: object
) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant())
    await server.client.patch(
        f"/v1/tenants/{tenant_id}", json={"monthly_budget_usd": 3.5, "limits": {"pids": 64}}, headers=admin
    )
    before = (await server.client.get(f"/v1/tenants/{tenant_id}", headers=admin)).json()
    body = {"monthly_budget_usd": amount, "egress_allow": ["changed.test"]}
    assert_invalid(
        await server.client.patch(f"/v1/tenants/{tenant_id}", json=body, headers=admin), "monthly_budget_usd"
    )
    assert (await server.client.get(f"/v1/tenants/{tenant_id}", headers=admin)).json() == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_a_budget_that_is_not_a_finite_number_is_a_422(server: Server, literal: str) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant())
    response = await server.client.patch(
        f"/v1/tenants/{tenant_id}", content=f'{{"monthly_budget_usd": {literal}}}',
        headers={**admin, "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code in (400, 422), response.text
    assert (await server.client.get(f"/v1/tenants/{tenant_id}", headers=admin)).json()[
        "monthly_budget_usd"
    ] is None


async def test_only_an_admin_key_sets_a_budget(server: Server) -> None:
    tenant = await server.new_tenant()
    tenant_id = await tenant_id_of(server, tenant)
    response = await server.client.patch(
        f"/v1/tenants/{tenant_id}", json={"monthly_budget_usd": 1e6}, headers=tenant
    )
    assert_problem(response, 403)


@pytest.mark.slow
async def test_the_cli_sets_and_clears_a_budget_and_refuses_bad_ones_in_one_line(
    server: Server, tmp_path: Path, database_url: str
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OUTPOST_DATA_DIR": str(tmp_path / "cli"),
        "OUTPOST_DATABASE_URL": database_url,
        # The offline CLI writes the audit log too: it needs the server's master key.
        "OUTPOST_SECRETS__MASTER_KEY_FILE": str(server.container.settings.resolved_master_key_file),
    }
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant("acme"))
    set_ = await run_cli(env, "tenants", "set", "acme", "--monthly-budget-usd", "12.5")
    assert set_.exit_code == 0, set_.stderr
    assert json.loads(set_.stdout)["monthly_budget_usd"] == 12.5
    bad = [
        (["--monthly-budget-usd", "-5"], "outpost: --monthly-budget-usd: Input should be greater than"),
        (["--monthly-budget-usd", "nan"], "outpost: --monthly-budget-usd: Input should be a finite number"),
        (["--monthly-budget-usd", "1e9"], "outpost: --monthly-budget-usd: Input should be less than"),
        (["--monthly-budget-usd", "5", "--clear-budget"], "outpost: give either --monthly-budget-usd"),
    ]
    results = await asyncio.gather(*(run_cli(env, "tenants", "set", "acme", *args) for args, _ in bad))
    for (args, expected), done in zip(bad, results, strict=True):
        assert (done.exit_code, done.stdout) == (1, ""), (args, done)
        assert done.stderr.startswith(expected), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
    not_a_number = await run_cli(env, "tenants", "set", "acme", "--monthly-budget-usd", "lots")
    assert not_a_number.exit_code == 2, not_a_number
    assert "lots" in not_a_number.stderr, not_a_number
    policy = (await server.client.get(f"/v1/tenants/{tenant_id}", headers=admin)).json()
    assert policy["monthly_budget_usd"] == 12.5
    cleared = await run_cli(env, "tenants", "set", "acme", "--clear-budget")
    assert cleared.exit_code == 0, cleared.stderr
    assert json.loads(cleared.stdout)["monthly_budget_usd"] is None
