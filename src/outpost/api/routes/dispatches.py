"""`/v1/dispatches`: submit, read, list, cancel, and events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from outpost.api.auth import CallerDep, ContainerDep
from outpost.api.routes.artifacts import artifact_read
from outpost.app import Container
from outpost.db.repositories.artifacts import ArtifactRow
from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import AgentName, DispatchStatus
from outpost.schemas.convert import dispatch_read, event_read
from outpost.schemas.dispatches import DispatchCreate, DispatchPage, DispatchRead, EventPage
from outpost.schemas.text import StorableText

router = APIRouter(prefix="/v1/dispatches", tags=["dispatches"])
IdempotencyKey = Annotated[StorableText | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


@router.post("", status_code=202, response_model=DispatchRead)
async def submit_dispatch(
    *,
    body: DispatchCreate, caller: CallerDep, container: ContainerDep, response: Response,
    idempotency_key: IdempotencyKey = None,
) -> DispatchRead:  # fmt: skip
    submitted = await container.dispatches.submit(caller, body, idempotency_key)
    response.headers["Location"] = f"/v1/dispatches/{submitted.dispatch.id}"
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    return dispatch_read(submitted.dispatch)


@router.get("", response_model=DispatchPage)
async def list_dispatches(
    *,
    caller: CallerDep,
    container: ContainerDep,
    status: DispatchStatus | None = None,
    agent: AgentName | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> DispatchPage:
    rows, next_cursor = await container.dispatches.list_page(
        caller, limit=limit, cursor=cursor, status=status, agent=agent
    )
    return DispatchPage(items=[dispatch_read(row) for row in rows], next_cursor=next_cursor)


@router.get("/{dispatch_id}", response_model=DispatchRead)
async def get_dispatch(
    dispatch_id: str, request: Request, caller: CallerDep, container: ContainerDep
) -> DispatchRead:
    row, stored = await container.dispatches.get_with_artifacts(caller, dispatch_id)
    return _with_artifacts(row, stored, request, container)


@router.post("/{dispatch_id}/cancel", response_model=DispatchRead)
async def cancel_dispatch(
    dispatch_id: str, request: Request, caller: CallerDep, container: ContainerDep
) -> DispatchRead:
    row = await container.dispatches.cancel(caller, dispatch_id)
    _, stored = await container.dispatches.get_with_artifacts(caller, row.id)
    return _with_artifacts(row, stored, request, container)


def _with_artifacts(
    row: DispatchRow, stored: list[ArtifactRow], request: Request, container: Container
) -> DispatchRead:
    """A single dispatch shows its artifacts, with fresh signed links."""
    signed = container.artifacts.signed(stored)
    base = str(request.base_url).rstrip("/")
    return dispatch_read(row, [artifact_read(item, base) for item in signed])


@router.get("/{dispatch_id}/logs", response_model=EventPage)
async def list_logs(
    dispatch_id: str,
    caller: CallerDep,
    container: ContainerDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage:
    rows = await container.dispatches.events(caller, dispatch_id, after, limit)
    next_after = rows[-1].seq if len(rows) == limit else None
    return EventPage(items=[event_read(row) for row in rows], next_after=next_after)
