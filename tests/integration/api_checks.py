"""Assertions and reads shared by the bad-input, key and listing tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import Server
from tests.integration.helpers import submit

PROBLEM_MEDIA_TYPE = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for name in ("type", "title", "detail"):
        assert isinstance(body[name], str), body
        assert body[name].strip(), body
    return body


def assert_invalid(response: httpx.Response, field: str) -> dict[str, Any]:
    """`response` is a 422 problem that names `field` in `errors[].field` and in its detail."""
    body = assert_problem(response, 422)
    assert field in [error["field"] for error in body["errors"]], body
    assert field in body["detail"], body
    return body


async def list_all(client: httpx.AsyncClient, headers: dict[str, str], **query: Any) -> list[dict[str, Any]]:
    """Every dispatch the caller can list (following cursors), newest first."""
    items: list[dict[str, Any]] = []
    params = {"limit": 200, **query}
    while True:
        response = await client.get("/v1/dispatches", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


@dataclass
class StoredTenant:
    """A tenant with one stored dispatch, for servers whose worker is off (nothing changes by itself)."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    dispatch_id: str

    @property
    def token(self) -> str:
        return self.headers["Authorization"].removeprefix("Bearer ")

    async def post_json(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post(
            "/v1/dispatches", json=body, headers={**self.headers, **(headers or {})}
        )

    async def post_raw(self, content: bytes | AsyncIterator[bytes], **headers: str) -> httpx.Response:
        sent = {**self.headers, "Content-Type": "application/json", **headers}
        return await self.client.post("/v1/dispatches", content=content, headers=sent)

    @asynccontextmanager
    async def unharmed(self) -> AsyncIterator[None]:
        """Fails the test if the tenant's stored dispatches differ after the block."""
        before = await list_all(self.client, self.headers)
        assert [item["id"] for item in before] == [self.dispatch_id]
        yield
        assert await list_all(self.client, self.headers) == before


async def new_stored_tenant(server: Server) -> StoredTenant:
    headers = await server.new_tenant()
    stored = await submit(server.client, headers, "echo precious", labels={"keep": "me"})
    return StoredTenant(server.client, headers, stored["id"])
