"""Storage accrual: a tenant's workspaces and artifacts are charged period after period, each starting where
the last ended, across restarts and with two servers on one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import select

from outpost.db.tables import ledger_entries
from tests.conftest import MakeServer, Server
from tests.integration.helpers import submit, wait_for_status

WRITE_OUTPUT = 'head -c 300000 /dev/zero > "$OUTPOST_OUTPUTS_DIR/zeros.bin"'
WRITE_WORKSPACE = "head -c 500000 /dev/zero > big.bin"
HOUR = timedelta(hours=1)


async def storage_rows(server: Server, tenant_id: str) -> list[dict[str, Any]]:
    query = (
        select(ledger_entries)
        .where(ledger_entries.c.tenant_id == tenant_id, ledger_entries.c.kind == "storage")
        .order_by(ledger_entries.c.occurred_at)
    )
    async with server.container.store.read() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def held_bytes(
    server: Server, headers: dict[str, str], dispatch_ids: list[str]
) -> tuple[int, datetime]:
    """The tenant's artifact and workspace bytes, and when the last of them was made."""
    sizes: list[int] = []
    made: list[datetime] = []
    for dispatch_id in dispatch_ids:
        artifacts = (
            await server.client.get(f"/v1/dispatches/{dispatch_id}/artifacts", headers=headers)
        ).json()
        sizes += [item["size_bytes"] for item in artifacts["items"]]
        made += [datetime.fromisoformat(item["created_at"]) for item in artifacts["items"]]
    workspaces = (await server.client.get("/v1/workspaces", headers=headers)).json()["items"]
    sizes += [workspace["size_bytes"] for workspace in workspaces]
    made += [datetime.fromisoformat(workspace["created_at"]) for workspace in workspaces]
    return sum(sizes), max(made)


def storage_cost(byte_s: int) -> int:
    """$0.30 per GB-month (2^30 bytes, 30 days), rounded half up to the micro-dollar."""
    exact = Fraction(byte_s, 2**30 * 30 * 86400) * Fraction(3, 10) * 1_000_000
    return int(exact + Fraction(1, 2))


async def test_storage_accrues_without_overlap_or_gap_across_restarts_and_two_servers(
    make_server: MakeServer,
) -> None:
    # One database, one master key: servers sharing a database share it.
    shared = {
        "limits": {"requests_per_s": 0},
        "secrets": {"master_key": base64.b64encode(os.urandom(32)).decode()},
    }
    server = await make_server(**shared)
    headers = await server.new_tenant()
    tenant_id = (await server.client.get("/v1/keys", headers=headers)).json()[0]["tenant_id"]
    kept = await submit(server.client, headers, WRITE_OUTPUT)
    saved = await submit(
        server.client, headers, WRITE_WORKSPACE, workspace={"mode": "persistent", "name": "w"}
    )
    for created in (kept, saved):
        await wait_for_status(server.client, headers, created["id"], {"succeeded"})
    held, last_made = await held_bytes(server, headers, [kept["id"], saved["id"]])
    assert held > 800_000
    accrual = server.container.storage_accrual
    first_at = last_made + 2 * HOUR
    (first,) = await accrual.accrue(first_at)
    # No row yet: the first period reaches one interval back at most, so all of it was held throughout.
    assert (first.period_start, first.occurred_at) == (first_at - HOUR, first_at)
    assert first.storage_byte_s == held * 3600
    assert first.cost_micro_usd == storage_cost(held * 3600)
    assert await accrual.accrue(first_at + timedelta(minutes=20)) == []  # charged less than half an hour ago
    (second,) = await accrual.accrue(first_at + 2 * HOUR)
    assert (second.period_start, second.storage_byte_s) == (first_at, held * 7200)

    restarted = await make_server(worker={"enabled": False}, **shared)
    (third,) = await restarted.container.storage_accrual.accrue(first_at + 3 * HOUR)
    assert third.period_start == second.occurred_at
    other = await make_server(worker={"enabled": False}, **shared)
    moments = [first_at + 5 * HOUR, first_at + 5 * HOUR + timedelta(seconds=1)]
    racing = await asyncio.gather(*(
        srv.container.storage_accrual.accrue(at) for srv, at in zip((restarted, other), moments, strict=True)
    ))  # fmt: skip
    assert sorted(len(rows) for rows in racing) == [0, 1]  # one charged, the other found it just done

    rows = await storage_rows(server, tenant_id)
    assert len(rows) == 4
    for before, after in itertools.pairwise(rows):
        assert after["period_start"] == before["occurred_at"]  # no overlap, no gap
    assert (
        sum(row["storage_byte_s"] for row in rows)
        == held * (rows[-1]["occurred_at"] - first.period_start).total_seconds()
    )


async def test_an_item_created_within_the_period_counts_from_its_creation(server: Server) -> None:
    headers = await server.new_tenant()
    kept = await submit(server.client, headers, WRITE_OUTPUT)
    await wait_for_status(server.client, headers, kept["id"], {"succeeded"})
    artifacts = (await server.client.get(f"/v1/dispatches/{kept['id']}/artifacts", headers=headers)).json()
    size = sum(item["size_bytes"] for item in artifacts["items"])
    made = max(datetime.fromisoformat(item["created_at"]) for item in artifacts["items"])
    # The tenant was made moments before its artifacts: a period from its creation covers part of theirs.
    (row,) = await server.container.storage_accrual.accrue(made + timedelta(seconds=30))
    assert row.period_start < made
    assert 30 * size <= row.storage_byte_s < (row.occurred_at - row.period_start).total_seconds() * size


async def test_a_tenant_holding_nothing_gets_no_storage_row(server: Server) -> None:
    headers = await server.new_tenant()
    tenant_id = (await server.client.get("/v1/keys", headers=headers)).json()[0]["tenant_id"]
    now = datetime.fromisoformat(
        (await server.client.get("/v1/keys", headers=headers)).json()[0]["created_at"]
    )
    assert await server.container.storage_accrual.accrue(now + HOUR) == []
    assert await storage_rows(server, tenant_id) == []
