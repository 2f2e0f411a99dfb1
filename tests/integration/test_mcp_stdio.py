"""`outpost mcp` (MCP over stdio), spawned by the SDK's own client, calling a real `outpost serve`.

The stdio server is a REST client: these tests check that its tools give the same results and the same
problems as the server's own `/mcp`, and that nothing a client sends can crash it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.mcp_clients import (
    Progress,
    check_tool_listing,
    ok,
    problem,
    rest,
    stdio_client,
    without_signatures,
)
from tests.integration.processes import OUTPOST, ServerProcess, free_port
from tests.integration.test_cli import new_tenant_cli, served_cli_fixtures

pytestmark = pytest.mark.slow

BODY_LIMIT_BYTES = 2**20
CLIENT_INFO = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "t", "version": "1"},
}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": CLIENT_INFO}


server, admin_key, _ = served_cli_fixtures(
    "mcp-stdio", {"OUTPOST_LIMITS__MAX_BODY_BYTES": str(BODY_LIMIT_BYTES)}
)


@pytest.fixture
def key(server: ServerProcess, admin_key: str) -> str:
    return new_tenant_cli(server, admin_key).key


async def test_tools_are_listed_with_input_and_output_schemas_and_the_domain_enums(
    server: ServerProcess, key: str
) -> None:
    async with stdio_client(server.url, key) as client:
        await check_tool_listing(client)


async def test_a_waiting_dispatch_streams_progress_and_returns_the_ended_dispatch_as_rest_shows_it(
    server: ServerProcess, key: str
) -> None:
    progress = Progress()
    async with stdio_client(server.url, key) as client:
        task = {"agent": "shell", "task": "echo first; sleep 0.3; echo second", "wait_s": 30}
        ended = ok(await client.call_tool("outpost_dispatch", task, progress_callback=progress))
    assert (ended["status"], ended["result"]) == ("succeeded", "first\nsecond")
    assert "status: running" in progress.messages
    assert "second" in progress.messages
    assert progress.messages[-1] == "status: succeeded"
    progress.assert_increasing()
    with rest(server.url, key) as api:
        shown = api.get(f"/v1/dispatches/{ended['id']}").json()
    assert without_signatures(ended) == without_signatures(shown)


async def test_status_cancel_list_logs_artifacts_and_workspaces_return_what_the_rest_api_returns(
    server: ServerProcess, key: str
) -> None:
    async with stdio_client(server.url, key) as client:
        task = {"agent": "shell", "task": "echo hi", "wait_s": 30}
        ended = ok(await client.call_tool("outpost_dispatch", task))
        ref = {"dispatch_id": ended["id"]}
        status = ok(await client.call_tool("outpost_status", ref))
        cancelled = ok(await client.call_tool("outpost_cancel", ref))  # has ended: returned unchanged
        listed = ok(await client.call_tool("outpost_list_dispatches", {"agent": "shell"}))
        logs = ok(await client.call_tool("outpost_logs", {**ref, "after": 1}))
        artifacts = ok(await client.call_tool("outpost_get_artifacts", ref))
        workspaces = ok(await client.call_tool("outpost_list_workspaces", {}))
        health = ok(await client.call_tool("outpost_health", {}))
    with rest(server.url, key) as api:
        shown = api.get(f"/v1/dispatches/{ended['id']}").json()
        assert without_signatures(status) == without_signatures(cancelled) == without_signatures(shown)
        assert listed == api.get("/v1/dispatches", params={"agent": "shell"}).json()
        assert logs == api.get(f"/v1/dispatches/{ended['id']}/logs", params={"after": 1}).json()
        shown_artifacts = api.get(f"/v1/dispatches/{ended['id']}/artifacts").json()
        assert without_signatures(artifacts) == without_signatures(shown_artifacts)
        assert workspaces == api.get("/v1/workspaces").json()
    assert health["status"] == "ok"
    assert health["checks"]["store"] == "ok"


async def test_another_tenant_can_neither_see_nor_cancel_a_dispatch(
    server: ServerProcess, admin_key: str, key: str
) -> None:
    other_key = new_tenant_cli(server, admin_key).key
    async with stdio_client(server.url, key) as owner, stdio_client(server.url, other_key) as other:
        mine = ok(await owner.call_tool("outpost_dispatch", {"agent": "shell", "task": "sleep 60"}))
        ref = {"dispatch_id": mine["id"]}
        for tool in ("outpost_status", "outpost_cancel", "outpost_logs", "outpost_get_artifacts"):
            refused = problem(await other.call_tool(tool, ref))
            assert (refused["status"], refused["detail"]) == (404, f"no dispatch {mine['id']!r}"), tool
        assert ok(await owner.call_tool("outpost_status", ref))["status"] != "cancelled"
        assert ok(await owner.call_tool("outpost_cancel", ref))["status"] == "cancelled"


async def test_bad_arguments_and_an_oversized_task_are_tool_errors_and_the_server_goes_on(
    server: ServerProcess, key: str
) -> None:
    async with stdio_client(server.url, key) as client:
        missing = problem(await client.call_tool("outpost_dispatch", {"task": "x"}))
        assert (missing["status"], missing["errors"][0]["field"]) == (422, "agent")
        wrong = problem(await client.call_tool("outpost_list_dispatches", {"status": "sleeping"}))
        assert (wrong["status"], wrong["errors"][0]["field"]) == (422, "status")
        # Valid arguments, but a request body over the server's limit: the API's 413 comes back.
        oversized = {"agent": "shell", "task": "x" * (BODY_LIMIT_BYTES + 1)}
        too_big = problem(await client.call_tool("outpost_dispatch", oversized))
        assert too_big["status"] == 413, too_big
        assert ok(await client.call_tool("outpost_health", {}))["status"] == "ok"


async def test_an_unreachable_server_is_a_503_tool_error_not_a_crash(key: str) -> None:
    async with stdio_client(f"http://127.0.0.1:{free_port()}", key) as client:
        refused = problem(await client.call_tool("outpost_status", {"dispatch_id": "x"}))
        assert refused["status"] == 503
        assert refused["detail"].startswith("cannot reach the Outpost server")
        assert problem(await client.call_tool("outpost_health", {}))["status"] == 503


def test_lines_that_are_not_json_rpc_do_not_stop_the_stdio_server(server: ServerProcess, key: str) -> None:
    garbage = ["not json at all", '{"jsonrpc": "2.0"', "[1, 2, 3]", '"x"' * 100_000, "{}"]
    lines = [*garbage, json.dumps(INITIALIZE)]
    done = subprocess.run(
        [OUTPOST, "mcp"], input="\n".join(lines) + "\n", env=_env(server.url, key), capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [answer["id"] for answer in answers if "result" in answer] == [1]
    assert answers[-1]["result"]["serverInfo"]["name"] == "outpost"


def test_without_an_api_key_outpost_mcp_says_so_in_one_line_and_exits_non_zero(server: ServerProcess) -> None:
    env = {name: value for name, value in _env(server.url, "").items() if name != "OUTPOST_API_KEY"}
    done = subprocess.run(
        [OUTPOST, "mcp"], input="", env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("outpost: no API key: set OUTPOST_API_KEY")
    assert done.stdout == ""


def _env(url: str, key: str) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    return {**base, "OUTPOST_URL": url, "OUTPOST_API_KEY": key}
