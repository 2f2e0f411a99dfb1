"""`outpost mcp`: serve MCP over stdio for desktop clients (Claude Desktop, Claude Code)."""

from __future__ import annotations

import os

import anyio
import click

from outpost.cli.client import NO_KEY, ClientSettings
from outpost.errors import AuthenticationFailed
from outpost.mcp.stdio import serve_stdio


@click.command("mcp")
def mcp() -> None:
    """Serve the Outpost MCP tools on stdin/stdout; they call the server at OUTPOST_URL as the tenant of
    OUTPOST_API_KEY. An MCP client starts this command itself (see docs/api.md)."""
    settings = ClientSettings.from_environment(os.environ)
    if not settings.api_key:
        raise AuthenticationFailed(NO_KEY)  # at start, not on every tool call: the client shows this line
    anyio.run(serve_stdio, settings)
