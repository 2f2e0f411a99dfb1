"""Keyset pagination of `GET /v1/dispatches`: order, coverage, filters and tenancy."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pytest

from outpost.db.repositories import dispatches as dispatch_repo
from outpost.domain.ids import new_ulid
from tests.conftest import MakeServer, Server
from tests.integration.helpers import submit


@dataclass
class TwoTenants:
    """Two tenants whose dispatches were submitted interleaved; id lists are newest first."""

    server: Server
    mine: dict[str, str]
    theirs: dict[str, str]
    my_ids: list[str]
    their_ids: list[str]


MakeTwoTenants = Callable[..., Awaitable[TwoTenants]]


@pytest.fixture
def make_two_tenants(make_server: MakeServer) -> MakeTwoTenants:
    async def factory(mine: int = 90, theirs: int = 30) -> TwoTenants:
        server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
        tenants = TwoTenants(server, await server.new_tenant(), await server.new_tenant(), [], [])
        total = mine + theirs
        for index in range(total):
            # Spread their submissions evenly between mine, so that their ids fall between my ids.
            is_theirs = (index + 1) * theirs // total > index * theirs // total
            headers, ids = (
                (tenants.theirs, tenants.their_ids) if is_theirs else (tenants.mine, tenants.my_ids)
            )
            ids.insert(0, (await submit(server.client, headers, f"echo {index}"))["id"])
        return tenants

    return factory


async def fetch_pages(server: Server, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every page in turn, following next_cursor from the first page to the last."""
    pages: list[dict[str, Any]] = []
    while True:
        response = await server.client.get("/v1/dispatches", params=params, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if pages[-1]["next_cursor"] is None:
            return pages
        assert len(pages) < 1000, "the cursor does not advance"
        params = {**params, "cursor": pages[-1]["next_cursor"]}


def ids_of(pages: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for page in pages for item in page["items"]]


async def test_pages_are_newest_first_disjoint_and_cover_everything_once(
    make_two_tenants: MakeTwoTenants, subtests: pytest.Subtests
) -> None:
    tenants = await make_two_tenants()
    for limit in (1, 7, 40, 50, 89, 90, 91, 200, None):
        with subtests.test(limit=limit):
            params = {} if limit is None else {"limit": limit}
            pages = await fetch_pages(tenants.server, tenants.mine, **params)
            # Equal to the full newest-first list of unique ids: ordered, disjoint, complete.
            assert ids_of(pages) == tenants.my_ids
            page_size = limit or 50
            assert len(pages) == max(1, math.ceil(len(tenants.my_ids) / page_size))
            assert all(len(page["items"]) == page_size for page in pages[:-1])
            assert all(page["next_cursor"] for page in pages[:-1])
            assert pages[-1]["next_cursor"] is None
            created = [datetime.fromisoformat(item["created_at"]) for page in pages for item in page["items"]]
            assert created == sorted(created, reverse=True)


async def test_a_cursor_keeps_its_place_while_new_dispatches_arrive(make_two_tenants: MakeTwoTenants) -> None:
    tenants = await make_two_tenants(mine=30, theirs=0)
    client, mine = tenants.server.client, tenants.mine
    first = (await client.get("/v1/dispatches", params={"limit": 10}, headers=mine)).json()
    newer = [(await submit(client, mine, "echo newer"))["id"] for _ in range(5)]
    rest = await fetch_pages(tenants.server, mine, limit=10, cursor=first["next_cursor"])
    assert ids_of([first, *rest]) == tenants.my_ids
    fresh = await fetch_pages(tenants.server, mine, limit=10)
    assert ids_of(fresh) == newer[::-1] + tenants.my_ids


async def test_another_tenants_dispatches_never_appear(make_two_tenants: MakeTwoTenants) -> None:
    tenants = await make_two_tenants()
    server = tenants.server
    assert ids_of(await fetch_pages(server, tenants.theirs, limit=7)) == tenants.their_ids
    for mine_filtered in ({"status": "queued"}, {"agent": "shell"}, {"status": "queued", "agent": "shell"}):
        assert ids_of(await fetch_pages(server, tenants.mine, limit=7, **mine_filtered)) == tenants.my_ids
    # A cursor issued to me, used by them, pages through their older dispatches only.
    first = await server.client.get("/v1/dispatches", params={"limit": 40}, headers=tenants.mine)
    borrowed = await fetch_pages(server, tenants.theirs, limit=7, cursor=first.json()["next_cursor"])
    assert ids_of(borrowed) == [i for i in tenants.their_ids if i < tenants.my_ids[39]]


async def cancel(server: Server, headers: dict[str, str], dispatch_id: str) -> None:
    response = await server.client.post(f"/v1/dispatches/{dispatch_id}/cancel", headers=headers)
    assert response.json()["status"] == "cancelled", response.text


async def test_the_status_filter_pages_through_matching_dispatches_only(
    make_two_tenants: MakeTwoTenants,
) -> None:
    tenants = await make_two_tenants()
    server, mine = tenants.server, tenants.mine
    cancelled = tenants.my_ids[::3]
    for dispatch_id in cancelled:
        await cancel(server, mine, dispatch_id)
    await cancel(server, tenants.theirs, tenants.their_ids[0])
    queued = [i for i in tenants.my_ids if i not in cancelled]
    for status, expected in (
        ("cancelled", cancelled),
        ("queued", queued),
        ("running", []),
        ("succeeded", []),
    ):
        pages = await fetch_pages(server, mine, limit=7, status=status)
        assert ids_of(pages) == expected, status
        assert {item["status"] for page in pages for item in page["items"]} <= {status}


async def test_the_agent_filter_pages_through_that_agents_dispatches_only(
    make_two_tenants: MakeTwoTenants,
) -> None:
    tenants = await make_two_tenants(mine=40, theirs=10)
    server, mine = tenants.server, tenants.mine
    # This server runs only the shell agent, so dispatches of another agent are written to the store directly.
    async with server.container.store.write() as conn:
        template = await dispatch_repo.get_dispatch(conn, tenants.my_ids[0])
        assert template is not None
        claude_ids = sorted((new_ulid() for _ in range(9)), reverse=True)
        for dispatch_id in claude_ids:
            await dispatch_repo.insert_dispatch(conn, replace(template, id=dispatch_id, agent="claude"))
    claude = await fetch_pages(server, mine, limit=4, agent="claude")
    assert ids_of(claude) == claude_ids
    assert {item["agent"] for page in claude for item in page["items"]} == {"claude"}
    assert ids_of(await fetch_pages(server, mine, limit=4, agent="shell")) == tenants.my_ids
    assert ids_of(await fetch_pages(server, mine, agent="codex")) == []
    assert ids_of(await fetch_pages(server, tenants.theirs, agent="claude")) == []
    both = await fetch_pages(server, mine, limit=4, agent="claude", status="queued")
    assert ids_of(both) == claude_ids
