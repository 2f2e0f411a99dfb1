"""Live events as server-sent events: `/v1/dispatches/{id}/events` and the tenant feed `/v1/events`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from outpost.api.auth import ContainerDep, StreamCallerDep
from outpost.api.problems import problem
from outpost.app import Container
from outpost.domain.dispatch import DispatchStatus
from outpost.errors import InvalidInput
from outpost.events.feed import FeedFilter
from outpost.events.key_watch import while_key_is_live
from outpost.services.keys import Principal

router = APIRouter(tags=["events"])
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]
After = Annotated[str | None, Query(description="Resume point for clients that cannot send Last-Event-ID.")]
_STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The events, as they happen."},
    400: {"description": "A resume point this stream did not send, or one past its end."},
}


class EventStreamResponse(StreamingResponse):
    """`text/event-stream`, unbuffered, that closes its frames as soon as it stops, whether the stream
    ended, the client went away or the server is stopping: nothing stays subscribed."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncGenerator[bytes, None]) -> None:
        super().__init__(frames, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._frames = frames

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._frames.aclose()


@router.get(
    "/v1/dispatches/{dispatch_id}/events",
    status_code=200,
    response_class=EventStreamResponse,
    responses=_STREAM_RESPONSES,
)
async def stream_dispatch_events(
    dispatch_id: str, caller: StreamCallerDep, container: ContainerDep, last_event_id: LastEventId = None,
    after: After = None,
) -> Response:  # fmt: skip
    """Every event of the dispatch after the resume point, live; the stream ends after the terminal one."""
    source, resume_from = _resume_point(last_event_id, after)
    try:
        frames = await container.event_streams.open_dispatch(caller, dispatch_id, resume_from, source)
    except InvalidInput as exc:
        return _bad_resume_point(exc, source)
    return _watched_response(frames, caller, container)


@router.get("/v1/events", status_code=200, response_class=EventStreamResponse, responses=_STREAM_RESPONSES)
async def stream_tenant_events(
    caller: StreamCallerDep, container: ContainerDep, last_event_id: LastEventId = None, after: After = None,
    dispatch: Annotated[list[str] | None, Query()] = None,
    status: Annotated[list[DispatchStatus] | None, Query()] = None,
) -> Response:  # fmt: skip
    """The events of all the tenant's dispatches (or of `dispatch`, and only status events reaching one
    of `status`), live, from now or after the resume point. The stream does not end."""
    source, resume_from = _resume_point(last_event_id, after)
    wanted = FeedFilter(tuple(dispatch or ()), frozenset(status or ()))
    try:
        frames = await container.event_streams.open_tenant(caller, wanted, resume_from, source)
    except InvalidInput as exc:
        return _bad_resume_point(exc, source)
    return _watched_response(frames, caller, container)


def _watched_response(
    frames: AsyncGenerator[bytes, None], caller: Principal, container: Container
) -> Response:
    """The stream ends soon after its key is revoked or expires (see `key_watch`)."""
    recheck_s = container.settings.events.key_recheck_s
    return EventStreamResponse(while_key_is_live(frames, lambda: container.keys.is_live(caller), recheck_s))


def _resume_point(last_event_id: str | None, after: str | None) -> tuple[str, str | None]:
    """The header wins: a browser's EventSource reconnects to the same URL (with its first `after`) and
    sends the id of the last event it received as `Last-Event-ID`."""
    if last_event_id is not None:
        return "Last-Event-ID", last_event_id.strip()
    return "after", after


def _bad_resume_point(exc: InvalidInput, source: str) -> Response:
    """A resume point the stream cannot start from is a bad request (400), unlike a field that fails
    validation (422): the client must start over or resume from an id the stream sent."""
    if exc.field != source:
        raise exc
    errors = [{"field": source, "message": exc.detail}]
    return problem(400, "invalid-last-event-id", exc.detail, errors=errors)
