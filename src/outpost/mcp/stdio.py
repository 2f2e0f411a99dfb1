"""`outpost mcp`: the MCP server over stdin and stdout, for desktop clients; its tools call the REST API."""

from __future__ import annotations

from mcp.server.stdio import stdio_server

from outpost.cli.client import ClientSettings
from outpost.mcp.rest import OutpostApi, RestBackend
from outpost.mcp.server import build_server


async def serve_stdio(settings: ClientSettings) -> None:
    """Serve until the client closes stdin. Tool calls go to `settings.url` with `settings.api_key`."""
    api = OutpostApi(settings)
    with api:
        backend = RestBackend(api)
        server = build_server(lambda _: backend)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
