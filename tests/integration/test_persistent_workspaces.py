"""Persistent workspaces: reused by later dispatches, listed, sized against a quota, deleted when idle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeServer, Server
from tests.git_repos import Origin
from tests.integration.api_checks import assert_problem
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status

QUOTA = 64 * 1024 * 1024


@pytest.fixture
async def ws_server(make_server: MakeServer) -> Server:
    return await make_server(
        limits={"requests_per_s": 0}, git={"allow_local": True}, workspaces={"quota_bytes": QUOTA}
    )


async def run_in(
    server: Server, headers: dict[str, str], task: str, name: str, **fields: Any
) -> dict[str, Any]:
    created = await submit(
        server.client, headers, task, workspace={"mode": "persistent", "name": name}, **fields
    )
    return await wait_for_status(server.client, headers, created["id"], TERMINAL)


async def log_lines(server: Server, headers: dict[str, str], dispatch_id: str) -> list[str]:
    events = await all_events(server.client, headers, dispatch_id)
    return [e["data"]["line"] for e in events if e["kind"] == "log"]


async def patch_of(server: Server, headers: dict[str, str], dispatch_id: str) -> str:
    listing = await server.client.get(f"/v1/dispatches/{dispatch_id}/artifacts", headers=headers)
    url = next(i["download_url"] for i in listing.json()["items"] if i["name"] == "changes.patch")
    return (await server.client.get(url)).text


async def listed(server: Server, headers: dict[str, str]) -> dict[str, Any]:
    response = await server.client.get("/v1/workspaces", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_later_dispatch_continues_where_the_last_one_left(ws_server: Server) -> None:
    headers = await ws_server.new_tenant()
    first = await run_in(ws_server, headers, "echo one > notes.txt; ln -s notes.txt link", "scratch")
    assert first["status"] == "succeeded", first
    assert first["workspace"] == {"mode": "persistent", "name": "scratch"}
    second = await run_in(
        ws_server, headers, "cat notes.txt; readlink link; echo two >> notes.txt", "scratch"
    )
    assert await log_lines(ws_server, headers, second["id"]) == ["one", "notes.txt"]
    patch = await patch_of(ws_server, headers, second["id"])
    assert "+two" in patch
    assert "+one" not in patch
    page = await listed(ws_server, headers)
    assert [item["name"] for item in page["items"]] == ["scratch"]
    assert page["items"][0]["size_bytes"] > 0
    assert page["items"][0]["in_use_by"] is None
    assert page["quota_bytes"] == QUOTA
    assert page["used_bytes"] == page["items"][0]["size_bytes"]


async def test_each_save_keeps_every_change_even_forged_ones(ws_server: Server) -> None:
    headers = await ws_server.new_tenant()
    setup = (
        "mkdir -p deps d; echo kept > deps/lib.js; echo deps/ > .gitignore; echo aaaa > d/f; echo x > gone"
    )
    assert (await run_in(ws_server, headers, setup, "w"))["status"] == "succeeded"
    forge = "touch -r d/f /tmp/stamp; echo bbbb > d/f; touch -r /tmp/stamp d/f; rm gone"
    assert (await run_in(ws_server, headers, forge, "w"))["status"] == "succeeded"
    third = await run_in(ws_server, headers, "cat d/f deps/lib.js; ls", "w")
    assert await log_lines(ws_server, headers, third["id"]) == ["bbbb", "kept", "d", "deps"]
    assert await patch_of(ws_server, headers, third["id"]) == ""  # its baseline is what it found


async def test_a_repository_workspace_keeps_its_changes_and_history(
    ws_server: Server, tmp_path: Path
) -> None:
    origin = Origin(tmp_path / "origin")
    origin.commit({"a.txt": b"base\n"})
    headers = await ws_server.new_tenant()
    first = await run_in(ws_server, headers, "echo more >> a.txt", "repo-ws", repo={"url": origin.url})
    assert first["status"] == "succeeded", first
    second = await run_in(ws_server, headers, "cat a.txt; git log --format=%s -1", "repo-ws")
    assert second["repo"]["url"] == origin.url  # the workspace's repository, though not named again
    assert await log_lines(ws_server, headers, second["id"]) == ["base", "more", "change"]
    other = Origin(tmp_path / "other")
    other.commit({"b.txt": b"x\n"})
    response = await ws_server.client.post(
        "/v1/dispatches", headers=headers,
        json={"agent": "shell", "task": "true", "repo": {"url": other.url},
              "workspace": {"mode": "persistent", "name": "repo-ws"}},
    )  # fmt: skip
    assert_problem(response, 409)


async def test_a_workspace_in_use_cannot_be_deleted_or_shared(ws_server: Server) -> None:
    headers = await ws_server.new_tenant()
    created = await submit(
        ws_server.client, headers, "sleep 30", workspace={"mode": "persistent", "name": "w"}
    )
    await wait_for_status(ws_server.client, headers, created["id"], {"running"})
    workspace = (await listed(ws_server, headers))["items"][0]
    assert workspace["in_use_by"] == created["id"]
    busy = await ws_server.client.delete(f"/v1/workspaces/{workspace['id']}", headers=headers)
    assert created["id"] in assert_problem(busy, 409)["detail"]
    again = await ws_server.client.post(
        "/v1/dispatches", headers=headers,
        json={"agent": "shell", "task": "true", "workspace": {"mode": "persistent", "name": "w"}},
    )  # fmt: skip
    assert_problem(again, 409)
    await ws_server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    deleted = await ws_server.client.delete(f"/v1/workspaces/{workspace['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await listed(ws_server, headers))["items"] == []
    homes = ws_server.container.settings.data_dir.resolve() / "persistent"
    assert not list(homes.glob(f"*/{workspace['id']}"))


async def test_a_run_cannot_grow_past_the_quota(ws_server: Server) -> None:
    headers = await ws_server.new_tenant()
    done = await run_in(ws_server, headers, "head -c 100M /dev/zero > big", "full")
    assert done["status"] == "failed"
    assert done["failure"]["reason"] == "disk_full"


async def test_other_tenants_cannot_see_or_delete_a_workspace(ws_server: Server) -> None:
    owner, other = await ws_server.new_tenant(), await ws_server.new_tenant()
    await run_in(ws_server, owner, "echo x > x", "mine")
    workspace = (await listed(ws_server, owner))["items"][0]
    assert (await listed(ws_server, other))["items"] == []
    assert_problem(await ws_server.client.delete(f"/v1/workspaces/{workspace['id']}", headers=other), 404)
    assert_problem(await ws_server.client.delete("/v1/workspaces/not-an-id", headers=other), 404)
    same_name = await run_in(ws_server, other, "ls", "mine")
    assert await log_lines(ws_server, other, same_name["id"]) == []  # its own, empty workspace


@pytest.mark.parametrize(
    "workspace",
    [
        {"mode": "persistent"},
        {"mode": "ephemeral", "name": "x"},
        {"mode": "persistent", "name": "../x"},
        {"mode": "persistent", "name": "a" * 101},
        {"mode": "other"},
    ],
)
async def test_bad_workspace_requests_are_refused(ws_server: Server, workspace: dict[str, str]) -> None:
    headers = await ws_server.new_tenant()
    response = await ws_server.client.post(
        "/v1/dispatches", headers=headers, json={"agent": "shell", "task": "true", "workspace": workspace}
    )
    assert_problem(response, 422)


async def test_concurrent_dispatches_for_a_new_workspace_get_one_owner(ws_server: Server) -> None:
    headers = await ws_server.new_tenant()
    body = {"agent": "shell", "task": "sleep 5", "workspace": {"mode": "persistent", "name": "race"}}
    responses = await asyncio.gather(
        *(ws_server.client.post("/v1/dispatches", json=body, headers=headers) for _ in range(8))
    )
    codes = sorted(response.status_code for response in responses)
    assert codes == [202] + [409] * 7, [r.text for r in responses]
    assert [item["name"] for item in (await listed(ws_server, headers))["items"]] == ["race"]
    owner = next(r.json()["id"] for r in responses if r.status_code == 202)
    await ws_server.client.post(f"/v1/dispatches/{owner}/cancel", headers=headers)
