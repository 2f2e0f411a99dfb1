"""`/v1/workspaces`: a tenant's persistent workspaces."""

from __future__ import annotations

from fastapi import APIRouter, Response

from outpost.api.auth import CallerDep, ContainerDep
from outpost.schemas.artifacts import WorkspacePage, WorkspaceRead

router = APIRouter(prefix="/v1/workspaces", tags=["workspaces"])


@router.get("", response_model=WorkspacePage)
async def list_workspaces(caller: CallerDep, container: ContainerDep) -> WorkspacePage:
    rows, used = await container.workspaces.list(caller)
    items = [
        WorkspaceRead(
            id=row.id,
            name=row.name,
            repo_url=row.repo_url,
            size_bytes=row.size_bytes,
            in_use_by=row.busy_dispatch_id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
        )
        for row in rows
    ]
    quota = container.workspaces.settings.quota_bytes
    return WorkspacePage(items=items, quota_bytes=quota, used_bytes=used)


@router.delete("/{workspace_id}", status_code=204)
async def delete_workspace(workspace_id: str, caller: CallerDep, container: ContainerDep) -> Response:
    """409 while a dispatch that has not ended uses it."""
    await container.workspaces.delete(caller, workspace_id)
    return Response(status_code=204)
