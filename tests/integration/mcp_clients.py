"""MCP clients for the MCP tests: the SDK's own client over streamable HTTP and over stdio, and checks
both transports share (same tools, same JSON as the REST API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from tests.integration.processes import OUTPOST

TOOL_NAMES = {
    "outpost_dispatch", "outpost_status", "outpost_cancel", "outpost_health", "outpost_list_workspaces",
    "outpost_delete_workspace", "outpost_get_artifacts", "outpost_list_dispatches", "outpost_logs",
}  # fmt: skip
# Freshly signed on every read, so two reads of one dispatch differ in these (and only these).
SIGNED_FIELDS = ("download_url", "url_expires_at")


@asynccontextmanager
async def http_client(url: str, key: str | None, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's client on `url`/mcp with `key` as the bearer token; `mode="legacy"` uses the
    initialize handshake (2025-11-25), `auto` the newest protocol the server offers."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


def stdio_parameters(url: str, key: str | None) -> StdioServerParameters:
    """`outpost mcp` as a desktop client starts it: OUTPOST_URL and OUTPOST_API_KEY in its environment."""
    env = {"OUTPOST_URL": url, **({"OUTPOST_API_KEY": key} if key is not None else {})}
    return StdioServerParameters(command=OUTPOST, args=["mcp"], env=env)


@asynccontextmanager
async def stdio_client(url: str, key: str) -> AsyncIterator[Client]:
    async with Client(stdio_parameters(url, key)) as client:
        yield client


@dataclass
class Progress:
    """Collects the progress notifications of one call."""

    notes: list[tuple[float, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.notes.append((progress, message))

    @property
    def messages(self) -> list[str | None]:
        return [message for _, message in self.notes]

    def assert_increasing(self) -> None:
        values = [progress for progress, _ in self.notes]
        assert values == sorted(set(values)), values


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that succeeded; fails the test with the problem otherwise."""
    assert not result.is_error, result.structured_content
    assert result.structured_content is not None
    return result.structured_content


def problem(result: CallToolResult) -> dict[str, Any]:
    """The RFC 9457 problem of a call that failed as a tool error."""
    assert result.is_error, result.structured_content
    body = result.structured_content
    assert body is not None
    assert {"type", "title", "status", "detail"} <= set(body), body
    return body


def without_signatures(body: Any) -> Any:
    """`body` with the per-read signed link fields dropped, at any depth."""
    if isinstance(body, dict):
        return {key: without_signatures(value) for key, value in body.items() if key not in SIGNED_FIELDS}
    if isinstance(body, list):
        return [without_signatures(item) for item in body]
    return body


def rest(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


async def check_tool_listing(client: Client) -> None:
    """Every tool is listed with an input and an output schema; the enums are the domain's."""
    from outpost.domain.dispatch import AgentName, DispatchStatus, Tier  # noqa: PLC0415

    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == TOOL_NAMES
    assert all(tool.output_schema is not None and tool.description for tool in listed.values())
    dispatch = listed["outpost_dispatch"].input_schema
    assert dispatch["type"] == "object"
    assert set(dispatch["required"]) == {"agent", "task"}
    properties = dispatch["properties"]
    assert properties["agent"]["enum"] == [agent.value for agent in AgentName]
    tiers = next(choice for choice in properties["tier"]["anyOf"] if "enum" in choice)
    assert tiers["enum"] == [tier.value for tier in Tier]
    assert (properties["wait_s"]["minimum"], properties["wait_s"]["maximum"]) == (0, 600)
    assert set(properties["repo"]["anyOf"][0]["properties"]) == {"url", "ref"}
    assert properties["workspace"]["properties"]["mode"]["enum"] == ["ephemeral", "persistent"]
    assert {"push", "timeout_s", "env", "labels", "max_cost_usd"} <= set(properties)
    statuses = next(c for c in listed["outpost_list_dispatches"].input_schema["properties"]["status"]["anyOf"]
                    if "enum" in c)  # fmt: skip
    assert statuses["enum"] == [status.value for status in DispatchStatus]
    assert "$ref" not in str(dispatch)
    assert "$defs" not in str(listed["outpost_status"].output_schema)
