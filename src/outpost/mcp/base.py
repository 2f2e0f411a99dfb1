"""What the MCP tools need from Outpost: one protocol, two backends.

- `rest.RestBackend` calls the REST API with OUTPOST_URL and OUTPOST_API_KEY (`outpost mcp`, stdio);
- `inprocess.InProcessBackend` runs inside the server for its `/mcp` endpoint, as the tenant of the key
  on the HTTP request.

Both return the shapes the REST API returns, so a tool's result is the same JSON over either transport.
Every method raises `OutpostError` subclasses only: `NotFound` for an unknown id and for another tenant's
resource alike, `InvalidInput`, `Conflict`, `AuthenticationFailed`, `RateLimited`, and `Unavailable` when
the server cannot be reached or is not ready.
"""

from __future__ import annotations

from typing import Any, Protocol

from outpost.domain.dispatch import AgentName, DispatchStatus
from outpost.schemas.artifacts import ArtifactList, WorkspacePage
from outpost.schemas.dispatches import DispatchCreate, DispatchPage, DispatchRead, EventPage


class OutpostBackend(Protocol):
    async def submit_dispatch(self, request: DispatchCreate, idempotency_key: str | None) -> DispatchRead:
        """`POST /v1/dispatches`: the queued dispatch (or, for a repeated idempotency key, the first one).
        Raises InvalidInput for a request over the server's or the tenant's limits, Conflict for a used
        idempotency key with another request."""
        ...

    async def get_dispatch(self, dispatch_id: str) -> DispatchRead:
        """`GET /v1/dispatches/{id}`, with signed artifact links once it has ended. Raises NotFound."""
        ...

    async def cancel_dispatch(self, dispatch_id: str) -> DispatchRead:
        """`POST /v1/dispatches/{id}/cancel`: idempotent; an ended dispatch comes back unchanged.
        Raises NotFound."""
        ...

    async def list_dispatches(
        self, *, status: DispatchStatus | None, agent: AgentName | None, limit: int, cursor: str | None
    ) -> DispatchPage:
        """`GET /v1/dispatches`: one page, newest first. Raises InvalidInput for a cursor it did not issue."""
        ...

    async def list_events(self, dispatch_id: str, after_seq: int, limit: int) -> EventPage:
        """`GET /v1/dispatches/{id}/logs`: events after `after_seq`, in sequence order. Raises NotFound."""
        ...

    async def list_artifacts(self, dispatch_id: str) -> ArtifactList:
        """`GET /v1/dispatches/{id}/artifacts`, with signed download links. Raises NotFound."""
        ...

    async def list_workspaces(self) -> WorkspacePage:
        """`GET /v1/workspaces`: the tenant's persistent workspaces and its quota."""
        ...

    async def delete_workspace(self, workspace_id: str) -> None:
        """`DELETE /v1/workspaces/{id}`. Raises NotFound, and Conflict while a dispatch uses it."""
        ...

    async def readiness(self) -> dict[str, Any]:
        """`GET /health/ready`'s body. Raises Unavailable, naming the failing checks, when not ready."""
        ...
