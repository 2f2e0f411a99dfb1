"""Reading and tampering with the audit log in integration tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.conftest import Server


async def audit_rows(server: Server, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every row `headers`' key may read through `GET /v1/audit`, page after page."""
    rows: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await server.client.get("/v1/audit", params={"after": after, **params}, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        rows.extend(page["items"])
        if page["next_after"] is None:
            return rows
        after = page["next_after"]


def actions(rows: list[dict[str, Any]]) -> list[str]:
    return [row["action"] for row in rows]


async def tamper(server: Server, statement: str, **values: Any) -> None:
    """Change the audit tables behind the server's back, as someone with database access could."""
    async with server.container.store.write() as conn:
        await conn.execute(text(statement), values)


async def tenant_id_of(server: Server, headers: dict[str, str]) -> str:
    response = await server.client.get("/v1/keys", headers=headers)
    assert response.status_code == 200, response.text
    tenant_id: str = response.json()[0]["tenant_id"]
    return tenant_id
