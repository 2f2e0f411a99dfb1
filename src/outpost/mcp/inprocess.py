"""The tools' backend inside the server (`/mcp`): the REST routes' own code, called directly.

The routes are where rows become the public JSON (signed artifact links, workspace pages, the readiness
report); calling them, rather than the services plus a second copy of that shaping, keeps a tool's result
identical to the REST answer. Authentication and rate limiting happened once, on the MCP HTTP request.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from outpost.api.routes import artifacts, dispatches, health, workspaces
from outpost.app import Container
from outpost.domain.dispatch import AgentName, DispatchStatus
from outpost.errors import Unavailable
from outpost.schemas.artifacts import ArtifactList, WorkspacePage
from outpost.schemas.convert import dispatch_read
from outpost.schemas.dispatches import DispatchCreate, DispatchPage, DispatchRead, EventPage
from outpost.services.keys import Principal


class InProcessBackend:
    """`OutpostBackend` for one caller, on one HTTP request (its base URL makes the artifact links)."""

    def __init__(self, container: Container, caller: Principal, request: Request) -> None:
        self._container = container
        self._caller = caller
        self._request = request

    async def submit_dispatch(self, request: DispatchCreate, idempotency_key: str | None) -> DispatchRead:
        submitted = await self._container.dispatches.submit(self._caller, request, idempotency_key)
        return dispatch_read(submitted.dispatch)

    async def get_dispatch(self, dispatch_id: str) -> DispatchRead:
        return await dispatches.get_dispatch(dispatch_id, self._request, self._caller, self._container)

    async def cancel_dispatch(self, dispatch_id: str) -> DispatchRead:
        return await dispatches.cancel_dispatch(dispatch_id, self._request, self._caller, self._container)

    async def list_dispatches(
        self, *, status: DispatchStatus | None, agent: AgentName | None, limit: int, cursor: str | None
    ) -> DispatchPage:
        return await dispatches.list_dispatches(
            caller=self._caller, container=self._container, status=status, agent=agent, limit=limit,
            cursor=cursor,
        )  # fmt: skip

    async def list_events(self, dispatch_id: str, after_seq: int, limit: int) -> EventPage:
        return await dispatches.list_logs(dispatch_id, self._caller, self._container, after_seq, limit)

    async def list_artifacts(self, dispatch_id: str) -> ArtifactList:
        return await artifacts.list_artifacts(dispatch_id, self._request, self._caller, self._container)

    async def list_workspaces(self) -> WorkspacePage:
        return await workspaces.list_workspaces(self._caller, self._container)

    async def delete_workspace(self, workspace_id: str) -> None:
        await workspaces.delete_workspace(workspace_id, self._caller, self._container)

    async def readiness(self) -> dict[str, Any]:
        report = await health.ready(self._container)
        if isinstance(report, Response):  # 503: the problem names the failing checks
            problem: dict[str, Any] = orjson.loads(bytes(report.body))
            raise Unavailable(str(problem.get("detail", "the server is not ready")))
        return report
