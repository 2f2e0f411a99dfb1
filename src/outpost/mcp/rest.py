"""The tools' backend for `outpost mcp`: the REST API, through the CLI's client.

The CLI's `ApiClient` already builds every request and translates every failure into an `OutpostError`;
it is synchronous, so each call runs in a worker thread (the client may be shared between threads).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from outpost.cli.client import ApiClient
from outpost.domain.dispatch import AgentName, DispatchStatus
from outpost.schemas.artifacts import ArtifactList, WorkspacePage
from outpost.schemas.dispatches import DispatchCreate, DispatchPage, DispatchRead, EventPage

T = TypeVar("T")


class OutpostApi(ApiClient):
    """`ApiClient` and the one call only the MCP server makes."""

    def readiness(self) -> dict[str, Any]:
        """`GET /health/ready`; a server that is not ready answers 503, which raises Unavailable."""
        return self._call("GET", "/health/ready", dict[str, Any])


class RestBackend:
    """`OutpostBackend` over HTTP, with the key and server of the client it is given."""

    def __init__(self, api: OutpostApi) -> None:
        self._api = api

    async def submit_dispatch(self, request: DispatchCreate, idempotency_key: str | None) -> DispatchRead:
        return await _in_thread(partial(self._api.submit_dispatch, request, idempotency_key))

    async def get_dispatch(self, dispatch_id: str) -> DispatchRead:
        return await _in_thread(partial(self._api.get_dispatch, dispatch_id))

    async def cancel_dispatch(self, dispatch_id: str) -> DispatchRead:
        return await _in_thread(partial(self._api.cancel_dispatch, dispatch_id))

    async def list_dispatches(
        self, *, status: DispatchStatus | None, agent: AgentName | None, limit: int, cursor: str | None
    ) -> DispatchPage:
        query = partial(self._api.list_dispatches, status=status, agent=agent, limit=limit, cursor=cursor)
        return await _in_thread(query)

    async def list_events(self, dispatch_id: str, after_seq: int, limit: int) -> EventPage:
        return await _in_thread(partial(self._api.list_events, dispatch_id, after_seq, limit))

    async def list_artifacts(self, dispatch_id: str) -> ArtifactList:
        items = await _in_thread(partial(self._api.list_artifacts, dispatch_id))
        return ArtifactList(items=items)

    async def list_workspaces(self) -> WorkspacePage:
        return await _in_thread(self._api.list_workspaces)

    async def delete_workspace(self, workspace_id: str) -> None:
        await _in_thread(partial(self._api.delete_workspace, workspace_id))

    async def readiness(self) -> dict[str, Any]:
        return await _in_thread(self._api.readiness)


async def _in_thread(call: Callable[[], T]) -> T:
    # Not cancellable: a request already sent finishes (within the client's timeout) before the tool
    # call that made it is abandoned, so no thread is left behind writing to a closed client.
    return await anyio.to_thread.run_sync(call)
