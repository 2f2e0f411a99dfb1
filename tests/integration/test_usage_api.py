"""`GET /v1/usage`: the ledger summed by agent, model, UTC day or tenant; each tenant sees its own, an admin
key everything; bad input is a problem (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from outpost.db.repositories import ledger as ledger_repo
from outpost.db.repositories.ledger import LedgerEntry
from outpost.domain.ids import new_ulid
from tests.conftest import Server

DAY1 = datetime(2026, 11, 2, 23, 59, 59, tzinfo=UTC)
DAY2 = datetime(2026, 11, 3, 0, 0, 0, tzinfo=UTC)
GIB = 2**30


async def tenant_id_of(server: Server, headers: dict[str, str]) -> str:
    tenant_id: str = (await server.client.get("/v1/keys", headers=headers)).json()[0]["tenant_id"]
    return tenant_id


def entry(tenant_id: str, kind: str, at: datetime, cost: int, **values: Any) -> LedgerEntry:
    fields: dict[str, Any] = {
        "agent": None, "provider": None, "model": None, "input_tokens": 0, "output_tokens": 0,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "cpu_usec": 0, "memory_byte_s": 0,
        "storage_byte_s": 0, "period_start": None, **values,
    }  # fmt: skip
    return LedgerEntry(
        id=new_ulid(), tenant_id=tenant_id, dispatch_id=None, kind=kind, cost_micro_usd=cost, prices="p1",
        occurred_at=at, **fields,
    )  # fmt: skip


async def charge(server: Server, entries: list[LedgerEntry]) -> None:
    async with server.container.store.write() as conn:
        await ledger_repo.insert_entries(conn, entries)


@pytest.fixture
async def tenants(server: Server) -> dict[str, dict[str, str]]:
    """Tenant `a` with tokens, compute and storage over two days; tenant `b` with one dispatch; an admin."""
    a, b, admin = (
        await server.new_tenant("acme"),
        await server.new_tenant("bolt"),
        await server.new_tenant(admin=True),
    )
    a_id, b_id = await tenant_id_of(server, a), await tenant_id_of(server, b)
    await charge(server, [
        entry(a_id, "tokens", DAY1, 1_500_000, agent="claude", provider="anthropic",
              model="claude-sonnet-5-5", input_tokens=1000, output_tokens=200, cache_read_tokens=30,
              cache_write_tokens=4),
        entry(a_id, "compute", DAY1, 250, agent="claude", cpu_usec=3_000_000, memory_byte_s=2 * GIB),
        entry(a_id, "tokens", DAY2, 20_000, agent="codex", provider="openai", model="gpt-6-luna",
              input_tokens=50, output_tokens=5),
        entry(a_id, "compute", DAY2, 1, agent="shell", cpu_usec=500_000),
        entry(a_id, "storage", DAY2, 417, storage_byte_s=GIB * 3600),
        entry(b_id, "tokens", DAY2, 9_000_000, agent="claude", provider="anthropic",
              model="claude-sonnet-5-5", input_tokens=7),
    ])  # fmt: skip
    return {"a": a, "b": b, "admin": admin, "a_id": {"id": a_id}, "b_id": {"id": b_id}}


async def usage(server: Server, headers: dict[str, str], **params: str) -> dict[str, Any]:
    response = await server.client.get("/v1/usage", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_key(report: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {group["key"]: group for group in report["groups"]}


async def test_usage_by_agent_sums_the_tenants_own_rows_with_a_total(
    server: Server, tenants: dict[str, dict[str, str]]
) -> None:
    report = await usage(server, tenants["a"])
    assert report["group_by"] == "agent"
    assert report["prices"] == server.container.ledger.prices.version
    groups = by_key(report)
    assert list(groups) == ["claude", "codex", None, "shell"]  # the dearest first
    claude = groups["claude"]
    assert (claude["input_tokens"], claude["output_tokens"], claude["cache_read_tokens"]) == (1000, 200, 30)
    assert (claude["tokens_usd"], claude["compute_usd"], claude["cost_usd"]) == (1.5, 0.00025, 1.50025)
    assert (claude["vcpu_seconds"], claude["memory_gb_seconds"]) == (3.0, 2.0)
    assert (groups[None]["storage_usd"], groups[None]["storage_gb_hours"]) == (0.000417, 1.0)
    total = report["total"]
    assert total["cost_usd"] == pytest.approx(1.520668, abs=1e-9)
    assert (total["input_tokens"], total["vcpu_seconds"]) == (1050, 3.5)


async def test_usage_by_model_and_by_day_with_since_and_until(
    server: Server, tenants: dict[str, dict[str, str]]
) -> None:
    models = by_key(await usage(server, tenants["a"], group_by="model"))
    assert set(models) == {"claude-sonnet-5-5", "gpt-6-luna", None}
    assert models[None]["cost_usd"] == pytest.approx(0.000668)  # compute and storage have no model
    days = await usage(server, tenants["a"], group_by="day")
    assert [group["key"] for group in days["groups"]] == ["2026-11-02", "2026-11-03"]  # UTC days, in order
    second = await usage(server, tenants["a"], group_by="day", since="2026-11-03")
    assert [group["key"] for group in second["groups"]] == ["2026-11-03"]
    first = await usage(server, tenants["a"], group_by="agent", until="2026-11-02")
    assert first["total"]["cost_usd"] == 1.50025
    assert (first["since"], first["until"]) == (None, "2026-11-02")
    empty = await usage(server, tenants["a"], since="2027-01-01")
    assert (empty["groups"], empty["total"]["cost_usd"]) == ([], 0.0)


async def test_a_tenant_never_sees_another_tenants_usage(
    server: Server, tenants: dict[str, dict[str, str]]
) -> None:
    report = await usage(server, tenants["b"])
    assert [(group["key"], group["cost_usd"]) for group in report["groups"]] == [("claude", 9.0)]
    response = await server.client.get("/v1/usage", params={"group_by": "tenant"}, headers=tenants["b"])
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "admin" in response.json()["detail"]


async def test_an_admin_key_sees_every_tenant_and_can_group_by_tenant(
    server: Server, tenants: dict[str, dict[str, str]]
) -> None:
    report = await usage(server, tenants["admin"], group_by="tenant")
    groups = by_key(report)
    a_id, b_id = tenants["a_id"]["id"], tenants["b_id"]["id"]
    assert list(groups) == [b_id, a_id]
    assert (groups[a_id]["name"], groups[b_id]["name"]) == ("acme", "bolt")
    assert groups[b_id]["cost_usd"] == 9.0
    everyone = await usage(server, tenants["admin"])
    assert by_key(everyone)["claude"]["input_tokens"] == 1007


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"group_by": ""}, "group_by"),
        ({"since": "2026-13-01"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2026-11-03", "until": "2026-11-02"}, "until"),
    ],
)
async def test_bad_usage_queries_are_422_problems_naming_the_field(
    server: Server, tenants: dict[str, dict[str, str]], params: dict[str, str], field: str
) -> None:
    response = await server.client.get("/v1/usage", params=params, headers=tenants["admin"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_usage_needs_a_key(server: Server) -> None:
    response = await server.client.get("/v1/usage")
    assert response.status_code == 401
