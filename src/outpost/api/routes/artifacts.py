"""Artifacts: a dispatch's list with signed links (API key), and downloads by signed link (no key)."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from outpost.api.auth import CallerDep, ContainerDep
from outpost.api.byte_ranges import RangeNotSatisfiable, parse_range
from outpost.api.problems import problem
from outpost.schemas.artifacts import ArtifactList, ArtifactRead
from outpost.services.artifacts import SignedArtifact

router = APIRouter(tags=["artifacts"])
_FALLBACK_CHARS = frozenset(string.ascii_letters + string.digits + "-_.+")


@router.get("/v1/dispatches/{dispatch_id}/artifacts", response_model=ArtifactList)
async def list_artifacts(
    dispatch_id: str, request: Request, caller: CallerDep, container: ContainerDep
) -> ArtifactList:
    signed = await container.artifacts.list_signed(caller, dispatch_id)
    base = str(request.base_url).rstrip("/")
    return ArtifactList(items=[artifact_read(item, base) for item in signed])


@router.get("/v1/artifacts/{artifact_id}/{name:path}", response_model=None)
async def download_artifact(
    artifact_id: str,
    name: str,
    request: Request,
    container: ContainerDep,
    range_header: str | None = Header(default=None, alias="Range"),
    if_range: str | None = Header(default=None, alias="If-Range"),
) -> Response:
    """Streams the artifact; one byte range with `Range` (206), `If-Range` with its ETag. `name` may
    hold `/` (`outputs/report/summary.md`); the signature covers all of it."""
    row = await container.artifacts.for_download(artifact_id, name, request.query_params)
    etag = f'"{row.sha256}"'
    headers = {
        "Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "private, no-store",
        "Content-Disposition": content_disposition(row.name), "X-Content-Type-Options": "nosniff",
        # Should a client still render a run's file (HTML, SVG) inline, it runs no script and loads nothing.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }  # fmt: skip
    wanted = range_header if if_range is None or if_range == etag else None
    try:
        byte_range = parse_range(wanted, row.size_bytes)
    except RangeNotSatisfiable:
        return problem(416, "range-not-satisfiable", f"the artifact has {row.size_bytes} bytes",
                       headers={"Content-Range": f"bytes */{row.size_bytes}"})  # fmt: skip
    start, end = (byte_range.start, byte_range.end) if byte_range else (0, row.size_bytes)
    chunks = container.objects.read(row.object_key, start, end)
    first = await _first_chunk(chunks)  # a missing object is a 404 here, before the status is sent
    headers["Content-Length"] = str(end - start)
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range(row.size_bytes)
    return StreamingResponse(
        _prepend(first, chunks), status_code=206 if byte_range else 200,
        media_type=row.content_type, headers=headers,
    )  # fmt: skip


def content_disposition(name: str) -> str:
    """`attachment`, named after the last segment of `name` (RFC 6266): an ASCII fallback made of safe
    characters only, and the exact name percent-encoded in `filename*` (RFC 8187). No name, whatever
    quotes, `;`, controls or non-ASCII it holds, can end the parameter or add another."""
    last = name.rsplit("/", 1)[-1]
    fallback = "".join(char if char in _FALLBACK_CHARS else "_" for char in last) or "artifact"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(last, safe='')}"


def artifact_read(item: SignedArtifact, base_url: str) -> ArtifactRead:
    row = item.row
    return ArtifactRead(
        name=row.name, size_bytes=row.size_bytes, sha256=row.sha256, content_type=row.content_type,
        created_at=row.created_at, expires_at=row.expires_at,
        download_url=f"{base_url}{item.path_and_query}", url_expires_at=item.url_expires_at,
    )  # fmt: skip


async def _first_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return b""


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
