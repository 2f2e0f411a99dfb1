"""`/mcp`: the MCP server over streamable HTTP, inside the API server, as the tenant of the request's key.

Every HTTP request is authenticated like a REST request (`Authorization: Bearer <key>`, the same key
check and rate limit); one without a valid key gets the API's 401 problem before MCP sees it. The tools
then run in-process, as that key's tenant.

Stateless: no MCP session outlives its HTTP request. Each POST is served on its own and its answer is an
SSE stream, so a waiting `outpost_dispatch` still streams its progress notifications on the response of
the call that asked for them (the one place the protocol lets them go without a session). Nothing is
kept per client: no session to expire or leak to another key, and any server process behind a load
balancer can answer any request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from outpost.api.auth import authenticate
from outpost.api.problems import problem
from outpost.app import Container
from outpost.errors import AuthenticationFailed
from outpost.mcp.base import OutpostBackend
from outpost.mcp.inprocess import InProcessBackend
from outpost.mcp.server import build_server
from outpost.services.keys import INVALID_KEY, Principal

_CALLER = "outpost.caller"
"""The ASGI scope key under which the authenticated caller reaches the tools."""


class McpEndpoint:
    """The ASGI app served at `/mcp`. `running()` must be entered (the app's lifespan does) first."""

    def __init__(self, max_body_bytes: int) -> None:
        # The SDK logs every stateless request's end at INFO; the API keeps no access log either.
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
        self._sessions = StreamableHTTPSessionManager(
            app=build_server(_backend_of_call),
            stateless=True,
            json_response=False,
            max_request_body_size=max_body_bytes,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve requests while inside. The SDK's manager runs in a task of its own: its task group must be
        left by the task that entered it, and an app's lifespan may be entered and left by different
        tasks (pytest fixtures do that)."""
        ready, stop = asyncio.Event(), asyncio.Event()
        manager = asyncio.create_task(self._run_manager(ready, stop))
        readiness = asyncio.create_task(ready.wait())
        await asyncio.wait({manager, readiness}, return_when=asyncio.FIRST_COMPLETED)
        readiness.cancel()
        if manager.done():
            manager.result()  # raises what kept it from starting
        try:
            yield
        finally:
            stop.set()
            await manager

    async def _run_manager(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        async with self._sessions.run():
            ready.set()
            await stop.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            # Without sessions there is no stream to open with GET and nothing to end with DELETE; 405 is
            # how the protocol says so.
            refusal = problem(405, "method-not-allowed", "MCP requests are POSTed", headers={"Allow": "POST"})
            await refusal(scope, receive, send)
            return
        # An OutpostError raised here reaches the app's exception handlers: a problem+json answer.
        scope[_CALLER] = await authenticate(Request(scope))
        await self._sessions.handle_request(scope, receive, send)


def _backend_of_call(ctx: ServerRequestContext[Any, Any]) -> OutpostBackend:
    request = ctx.request
    caller = request.scope.get(_CALLER) if isinstance(request, Request) else None
    if not isinstance(request, Request) or not isinstance(caller, Principal):
        raise AuthenticationFailed(INVALID_KEY)  # unreachable through McpEndpoint; refuse, never guess
    container: Container = request.app.state.container
    return InProcessBackend(container, caller, request)
