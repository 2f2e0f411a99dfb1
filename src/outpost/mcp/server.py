"""The MCP server: lists the tools and runs them, over any transport and with either backend.

Arguments are validated here, not by the SDK, so that a missing or wrong-typed one gets the API's 422
problem, and every failure of a tool (an Outpost error, a bug) becomes a tool result with `isError` set
rather than a protocol error: the model calling the tool reads why, and the connection goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, CallToolResult, ListToolsResult, TextContent
from mcp_types import Tool as ToolListing
from pydantic import BaseModel, ValidationError

from outpost import __version__
from outpost.errors import OutpostError
from outpost.mcp.base import OutpostBackend
from outpost.mcp.json_schema import model_schema
from outpost.mcp.problems import ToolFailed, internal_problem, problem_of_arguments, problem_of_error
from outpost.mcp.tools import TOOLS, Tool, ToolCall
from outpost.mcp.waiting import ReportProgress

log = logging.getLogger(__name__)

BackendFor = Callable[[ServerRequestContext[Any, Any]], OutpostBackend]
"""The backend a call runs on, as its caller. Raises AuthenticationFailed when the call has no caller."""

INSTRUCTIONS = (
    "Outpost runs coding tasks (dispatches) with AI coding-agent CLIs in sandboxes. Start one with "
    "outpost_dispatch (agent `shell` runs the task as a shell command), follow it with outpost_status or "
    "outpost_logs, and fetch what it changed with outpost_get_artifacts. A failed call's result is an "
    "RFC 9457 problem: status, title and detail say what went wrong."
)


class ToolCatalog:
    """The tools with their schemas, computed once."""

    def __init__(self, tools: tuple[Tool[Any], ...] = TOOLS) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._input_schemas = {tool.name: model_schema(tool.arguments, "validation") for tool in tools}
        self.listing = ListToolsResult(
            tools=[
                ToolListing(
                    name=tool.name, description=tool.description, annotations=tool.annotations,
                    input_schema=self._input_schemas[tool.name],
                    output_schema=model_schema(tool.result, "serialization"),
                )
                for tool in tools
            ]
        )  # fmt: skip

    def input_schema(self, name: str) -> dict[str, Any] | None:
        return self._input_schemas.get(name)

    def get(self, name: str) -> Tool[Any]:
        """Raises MCPError (invalid params) for a tool there is none of, as the protocol asks."""
        tool = self._tools.get(name)
        if tool is None:
            raise MCPError(INVALID_PARAMS, f"unknown tool {name[:100]!r}; tools/list names them")
        return tool


def build_server(backend_for: BackendFor, catalog: ToolCatalog | None = None) -> Server[Any]:
    """An MCP server whose tools run on `backend_for(ctx)`, the backend of each call's caller."""
    tools = catalog or ToolCatalog()

    async def list_tools(_: ServerRequestContext[Any, Any], __: object) -> ListToolsResult:
        return tools.listing

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams) -> CallToolResult:
        tool = tools.get(params.name)
        return await run_tool(tool, params.arguments, ctx, backend_for)

    return Server(
        "outpost", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
        on_call_tool=call_tool, get_tool_input_schema=tools.input_schema,
    )  # fmt: skip


async def run_tool(
    tool: Tool[Any],
    arguments: Mapping[str, Any] | None,
    ctx: ServerRequestContext[Any, Any],
    backend_for: BackendFor,
) -> CallToolResult:
    """The tool's result, or its failure as a problem (`isError`). Cancellation passes through."""
    try:
        parsed = tool.arguments.model_validate(arguments or {})
        call = ToolCall(backend_for(ctx), _progress_reporter(ctx))
        return _success(await tool.run(call, parsed))
    except ValidationError as exc:
        return _failure(problem_of_arguments(exc))
    except OutpostError as exc:
        return _failure(problem_of_error(exc))
    except ToolFailed as exc:
        return _failure(exc.problem)
    except Exception:
        log.exception("tool %s failed", tool.name)
        return _failure(internal_problem())


def _progress_reporter(ctx: ServerRequestContext[Any, Any]) -> ReportProgress:
    async def report(progress: float, message: str) -> None:
        # A no-op unless the client asked for progress (sent a progressToken with the call).
        await ctx.session.report_progress(progress, message=message)

    return report


def _success(result: BaseModel) -> CallToolResult:
    structured = result.model_dump(mode="json")
    return CallToolResult(content=[_json_text(structured)], structured_content=structured)


def _failure(problem: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[_json_text(problem)], structured_content=problem, is_error=True)


def _json_text(value: dict[str, Any]) -> TextContent:
    return TextContent(type="text", text=orjson.dumps(value).decode())
