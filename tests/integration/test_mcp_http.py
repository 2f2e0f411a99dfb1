"""The MCP server at `/mcp` (streamable HTTP), driven by the SDK's own client against a real `outpost serve`.

One server runs for the module; every test gets tenants of its own. Its body limit is 1 MiB, so that an
oversized MCP message is cheap to send.
"""

from __future__ import annotations

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.integration.mcp_clients import (
    Progress,
    check_tool_listing,
    http_client,
    ok,
    problem,
    rest,
    without_signatures,
)
from tests.integration.processes import ServerProcess
from tests.integration.test_cli import new_tenant_cli, served_cli_fixtures

pytestmark = pytest.mark.slow

BODY_LIMIT_BYTES = 2**20
MODES = ["auto", "legacy"]  # the 2026-07-28 per-request protocol, and the initialize handshake


server, admin_key, _ = served_cli_fixtures(
    "mcp-http", {"OUTPOST_LIMITS__MAX_BODY_BYTES": str(BODY_LIMIT_BYTES)}
)


@pytest.fixture
def key(server: ServerProcess, admin_key: str) -> str:
    """The key of a new tenant."""
    return new_tenant_cli(server, admin_key).key


async def test_tools_are_listed_with_input_and_output_schemas_and_the_domain_enums(
    server: ServerProcess, key: str
) -> None:
    async with http_client(server.url, key) as client:
        await check_tool_listing(client)


@pytest.mark.parametrize("mode", MODES)
async def test_a_waiting_dispatch_streams_progress_and_returns_the_ended_dispatch_as_rest_shows_it(
    server: ServerProcess, key: str, mode: str
) -> None:
    progress = Progress()
    async with http_client(server.url, key, mode) as client:
        task = {
            "agent": "shell",
            "task": "echo first; sleep 0.3; echo second",
            "wait_s": 30,
            "labels": {"t": mode},
        }
        result = await client.call_tool("outpost_dispatch", task, progress_callback=progress)
    ended = ok(result)
    assert (ended["status"], ended["exit_code"], ended["result"]) == ("succeeded", 0, "first\nsecond")
    assert "status: running" in progress.messages
    assert "first" in progress.messages
    assert progress.messages[-1] == "status: succeeded"
    progress.assert_increasing()
    with rest(server.url, key) as api:
        shown = api.get(f"/v1/dispatches/{ended['id']}").json()
    assert without_signatures(ended) == without_signatures(shown)
    assert {item["name"] for item in ended["artifacts"]} >= {"final-message.md", "events.jsonl"}


async def test_a_wait_that_runs_out_returns_the_dispatch_as_it_is_then_cancel_stops_it(
    server: ServerProcess, key: str
) -> None:
    async with http_client(server.url, key) as client:
        task = {"agent": "shell", "task": "sleep 60", "wait_s": 0.5}
        waited = ok(await client.call_tool("outpost_dispatch", task))
        assert waited["status"] in {"queued", "provisioning", "running"}
        cancelled = ok(await client.call_tool("outpost_cancel", {"dispatch_id": waited["id"]}))
        assert cancelled["status"] == "cancelled"
        again = ok(await client.call_tool("outpost_cancel", {"dispatch_id": waited["id"]}))
    assert without_signatures(again) == without_signatures(cancelled)


async def test_status_list_logs_and_artifacts_return_what_the_rest_api_returns(
    server: ServerProcess, key: str
) -> None:
    async with http_client(server.url, key) as client:
        task = {"agent": "shell", "task": "echo hi", "wait_s": 30}
        dispatch_id = ok(await client.call_tool("outpost_dispatch", task))["id"]
        status = ok(await client.call_tool("outpost_status", {"dispatch_id": dispatch_id}))
        listed = ok(await client.call_tool("outpost_list_dispatches", {"status": "succeeded", "limit": 5}))
        logs = ok(await client.call_tool("outpost_logs", {"dispatch_id": dispatch_id, "limit": 1000}))
        artifacts = ok(await client.call_tool("outpost_get_artifacts", {"dispatch_id": dispatch_id}))
    with rest(server.url, key) as api:
        shown = api.get(f"/v1/dispatches/{dispatch_id}").json()
        assert without_signatures(status) == without_signatures(shown)
        assert listed == api.get("/v1/dispatches", params={"status": "succeeded", "limit": 5}).json()
        assert logs == api.get(f"/v1/dispatches/{dispatch_id}/logs", params={"limit": 1000}).json()
        shown_artifacts = api.get(f"/v1/dispatches/{dispatch_id}/artifacts").json()
        assert without_signatures(artifacts) == without_signatures(shown_artifacts)
    final = next(item for item in artifacts["items"] if item["name"] == "final-message.md")
    async with httpx.AsyncClient(timeout=10) as anyone:  # the signed link works as given, with no key
        assert (await anyone.get(final["download_url"])).text == "hi"
    assert [item["id"] for item in listed["items"]] == [dispatch_id]
    assert any(event["kind"] == "log" and event["data"]["line"] == "hi" for event in logs["items"])


async def test_workspaces_are_listed_and_deleted_as_over_rest(server: ServerProcess, key: str) -> None:
    async with http_client(server.url, key) as client:
        workspace = {"mode": "persistent", "name": "notes"}
        task = {"agent": "shell", "task": "echo kept > notes.txt", "workspace": workspace, "wait_s": 30}
        assert ok(await client.call_tool("outpost_dispatch", task))["status"] == "succeeded"
        listed = ok(await client.call_tool("outpost_list_workspaces", {}))
        with rest(server.url, key) as api:
            assert listed == api.get("/v1/workspaces").json()
        (only,) = listed["items"]
        deleted = ok(await client.call_tool("outpost_delete_workspace", {"workspace_id": only["id"]}))
        assert deleted == {"workspace_id": only["id"], "deleted": True}
        assert ok(await client.call_tool("outpost_list_workspaces", {}))["items"] == []
        gone = problem(await client.call_tool("outpost_delete_workspace", {"workspace_id": only["id"]}))
    assert gone["status"] == 404


async def test_another_tenant_can_neither_see_nor_cancel_a_dispatch_exactly_as_over_rest(
    server: ServerProcess, admin_key: str, key: str
) -> None:
    other_key = new_tenant_cli(server, admin_key).key
    async with http_client(server.url, key) as owner, http_client(server.url, other_key) as other:
        mine = ok(await owner.call_tool("outpost_dispatch", {"agent": "shell", "task": "sleep 60"}))
        ref = {"dispatch_id": mine["id"]}
        for tool in ("outpost_status", "outpost_cancel", "outpost_logs", "outpost_get_artifacts"):
            refused = problem(await other.call_tool(tool, ref))
            assert (refused["status"], refused["detail"]) == (404, f"no dispatch {mine['id']!r}"), tool
        assert ok(await other.call_tool("outpost_list_dispatches", {}))["items"] == []
        still = ok(await owner.call_tool("outpost_status", ref))
        assert still["status"] != "cancelled"
        ok(await owner.call_tool("outpost_cancel", ref))
    with rest(server.url, other_key) as api:
        over_rest = api.get(f"/v1/dispatches/{mine['id']}")
    assert over_rest.status_code == 404
    assert over_rest.json() == refused


async def test_another_tenant_can_neither_list_nor_delete_a_workspace(
    server: ServerProcess, admin_key: str, key: str
) -> None:
    other_key = new_tenant_cli(server, admin_key).key
    async with http_client(server.url, key) as owner, http_client(server.url, other_key) as other:
        task = {"agent": "shell", "task": "echo kept > k.txt", "wait_s": 30,
                "workspace": {"mode": "persistent", "name": "private-notes"}}  # fmt: skip
        assert ok(await owner.call_tool("outpost_dispatch", task))["status"] == "succeeded"
        (mine,) = ok(await owner.call_tool("outpost_list_workspaces", {}))["items"]
        assert ok(await other.call_tool("outpost_list_workspaces", {}))["items"] == []
        refused = problem(await other.call_tool("outpost_delete_workspace", {"workspace_id": mine["id"]}))
        assert refused["status"] == 404
        assert ok(await owner.call_tool("outpost_list_workspaces", {}))["items"] == [mine]


async def test_missing_wrong_typed_and_unknown_arguments_are_tool_errors_naming_the_field(
    server: ServerProcess, key: str
) -> None:
    cases = [
        ("outpost_dispatch", {"agent": "shell"}, "task"),
        ("outpost_dispatch", {"agent": "robot", "task": "x"}, "agent"),
        ("outpost_dispatch", {"agent": "shell", "task": 42}, "task"),
        ("outpost_dispatch", {"agent": "shell", "task": "x", "wait_s": 601}, "wait_s"),
        ("outpost_dispatch", {"agent": "shell", "task": "x", "repo": {"ref": "main"}}, "repo.url"),
        ("outpost_status", {}, "dispatch_id"),
        ("outpost_status", {"dispatch_id": ["not", "a", "string"]}, "dispatch_id"),
        ("outpost_logs", {"dispatch_id": "x", "limit": "many"}, "limit"),
        ("outpost_health", {"verbose": True}, "verbose"),
    ]
    async with http_client(server.url, key) as client:
        for tool, arguments, field in cases:
            refused = problem(await client.call_tool(tool, arguments))
            assert refused["status"] == 422, (tool, arguments, refused)
            assert refused["errors"][0]["field"] == field, (tool, arguments, refused)
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("outpost_nothing", {})
        assert ok(await client.call_tool("outpost_health", {}))["status"] == "ok"  # still serving


async def test_a_task_over_the_servers_task_limit_is_the_apis_422(server: ServerProcess, key: str) -> None:
    async with http_client(server.url, key) as client:
        task = {"agent": "shell", "task": "x" * 300_000}  # under the body limit, over the task limit
        refused = problem(await client.call_tool("outpost_dispatch", task))
    assert refused["status"] == 422
    assert refused["detail"].startswith("task is longer than")


async def test_an_oversized_mcp_message_gets_the_apis_413_and_the_server_goes_on(
    server: ServerProcess, key: str
) -> None:
    arguments = {"agent": "shell", "task": "x" * BODY_LIMIT_BYTES}
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "outpost_dispatch", "arguments": arguments},
    }
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=10) as raw:
        response = await raw.post(f"{server.url}/mcp", json=call, headers=headers)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Payload too large"
    async with http_client(server.url, key) as client:
        with pytest.raises(MCPError):
            await client.call_tool("outpost_dispatch", arguments)
        assert ok(await client.call_tool("outpost_health", {}))["status"] == "ok"


@pytest.mark.parametrize("authorization", [None, "Bearer op_not_a_key", "Basic dXNlcjpwYXNz"])
def test_a_request_without_a_valid_key_gets_the_apis_401_problem(
    server: ServerProcess, authorization: str | None
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization is not None:
        headers["Authorization"] = authorization
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    response = httpx.post(f"{server.url}/mcp", json=listing, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["status"] == 401


async def test_the_sdk_client_with_a_bad_key_fails_instead_of_hanging(server: ServerProcess) -> None:
    with pytest.raises(ExceptionGroup) as caught:
        async with http_client(server.url, "op_not_a_key") as client:
            await client.list_tools()
    assert caught.group_contains(MCPError, match="error response", depth=2)


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_only_post_is_served_there_being_no_session_to_stream_or_end(
    server: ServerProcess, key: str, method: str
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    response = httpx.request(method, f"{server.url}/mcp", headers=headers, timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_repeated_idempotency_key_returns_the_first_dispatch(server: ServerProcess, key: str) -> None:
    task = {"agent": "shell", "task": "echo once", "idempotency_key": "build-42"}
    async with http_client(server.url, key) as client:
        first = ok(await client.call_tool("outpost_dispatch", task))
        again = ok(await client.call_tool("outpost_dispatch", task))
        changed = problem(await client.call_tool("outpost_dispatch", {**task, "task": "echo twice"}))
    assert again["id"] == first["id"]
    assert changed["status"] == 409
