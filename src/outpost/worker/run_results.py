"""What a run leaves behind, kept as artifacts in the object store whatever state it ended in.

After the run's processes are gone: the workspace's changes as a binary-safe patch and as a list of
changed files, the final message, the files the run left in its outputs directory (`outputs/<path>`,
see `run_outputs`), and the event log so far (JSONL). Objects go under
`tenants/<tenant>/dispatches/<dispatch>/<name>`; rows in `artifacts` say what exists and when it
expires. A failure to capture or store one artifact is reported in `warnings`, never turned into the
dispatch's own failure: the run's outcome stands.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from outpost.db.repositories import artifacts as artifact_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories.artifacts import ArtifactRow
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.errors import OutpostError
from outpost.storage.base import ObjectInfo, ObjectStore
from outpost.storage.blocking import run_blocking
from outpost.storage.keys import join_key
from outpost.worker.persistent import SpaceCheck
from outpost.worker.run_outputs import (
    OutputFile,
    OutputLimits,
    OutputsListing,
    RunOutputs,
    capped_warnings,
)
from outpost.worker.run_workspace import PreparedWorkspace
from outpost.workspaces.capture import Changes, capture_changes
from outpost.workspaces.git import Git
from outpost.workspaces.raw_diff import ChangedFile, display_name

log = logging.getLogger(__name__)
PATCH = "changes.patch"
CHANGED_FILES = "changed-files.json"
FINAL_MESSAGE = "final-message.md"
EVENT_LOG = "events.jsonl"
_CHUNK = 1024 * 1024
_EVENT_PAGE = 1000


@dataclass(slots=True)
class KeptResults:
    artifacts: list[ArtifactRow] = field(default_factory=list)
    changes: Changes | None = None
    warnings: list[str] = field(default_factory=list)


def artifact_prefix(tenant_id: str, dispatch_id: str) -> str:
    return f"tenants/{tenant_id}/dispatches/{dispatch_id}/"


class RunResults:
    """Captures and stores a finished run's artifacts."""

    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        git: Git,
        retention_days: int,
        space: SpaceCheck,
        outputs: OutputLimits | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._git = git
        self._retention = timedelta(days=retention_days)
        self._space = space
        self._outputs = outputs or OutputLimits()

    async def keep(
        self, row: DispatchRow, prepared: PreparedWorkspace | None, result: str | None, scratch: Path | None
    ) -> KeptResults:
        """Capture and store everything; `scratch` is an empty private directory for the patch (there
        is one whenever there is a workspace). Call only once every process of the run is gone. Never
        raises but for cancellation."""
        kept = KeptResults()
        if row.attempt > 1:
            await self._forget_earlier_attempt(row.id)
        if prepared is not None and scratch is not None:
            await self._keep_changes(row, prepared, scratch, kept)
        if result:
            await self._put(row, FINAL_MESSAGE, result.encode(), "text/markdown; charset=utf-8", kept)
        if prepared is not None:
            await self._keep_outputs(row, prepared.workdir, kept)
        await self._put(row, EVENT_LOG, self._event_log(row.id), "application/x-ndjson", kept)
        await self._record(kept)
        return kept

    async def _forget_earlier_attempt(self, dispatch_id: str) -> None:
        """A dispatch queued again after its worker was lost may have stored artifacts already: this
        attempt's replace them, and a name it does not produce must not point at the old attempt's."""
        async with self._store.read() as conn:
            earlier = await artifact_repo.list_for_dispatch(conn, dispatch_id)
        if not earlier:
            return
        for artifact in earlier:
            await self._objects.delete(artifact.object_key)
        async with self._store.write() as conn:
            await artifact_repo.delete_artifacts(conn, [artifact.id for artifact in earlier])

    async def _keep_changes(
        self, row: DispatchRow, prepared: PreparedWorkspace, scratch: Path, kept: KeptResults
    ) -> None:
        try:
            # Only a push or a persistent workspace uses the tree: writing it costs a pass over the index.
            with_tree = row.push_branch is not None or row.workspace_id is not None
            changes = await capture_changes(
                self._git, prepared.baseline, prepared.workdir, scratch, with_tree=with_tree
            )
        except OutpostError as exc:
            kept.warnings.append(f"the workspace's changes could not be captured: {exc.detail}")
            return
        kept.changes = changes
        kept.warnings += changes.warnings
        await self._put(
            row, PATCH, _file_chunks(changes.patch_path), "text/x-diff", kept, changes.patch_bytes
        )
        listing = json.dumps(
            {"base_commit": changes.base_commit, "files": [_changed_file(f) for f in changes.files]},
            ensure_ascii=False,
        )
        await self._put(row, CHANGED_FILES, listing.encode(), "application/json", kept)

    async def _keep_outputs(self, row: DispatchRow, workdir: Path, kept: KeptResults) -> None:
        """Each file the run left in its outputs directory, as an artifact; one capped list of warnings
        for what was left out or could not be stored."""
        try:
            outputs = await run_blocking(RunOutputs.open, workdir)
        except OutpostError as exc:
            kept.warnings.append(exc.detail)
            return
        if outputs is None:
            return  # the run removed its outputs directory
        stored, listing = KeptResults(), OutputsListing()
        prefix = artifact_prefix(row.tenant_id, row.id)
        try:
            listing = await run_blocking(outputs.listing, self._outputs, prefix)
            for file in listing.files:
                await self._put_output(row, outputs, file, stored)
        except OSError as exc:
            stored.warnings.append(f"the outputs directory could not be read: {exc.strerror or exc}")
        finally:
            outputs.close()
        kept.artifacts += stored.artifacts
        kept.warnings += capped_warnings(listing.warnings + stored.warnings, listing.more_warnings)

    async def _put_output(
        self, row: DispatchRow, outputs: RunOutputs, file: OutputFile, kept: KeptResults
    ) -> None:
        async with contextlib.aclosing(outputs.chunks(file)) as chunks:  # its file closes even on failure
            await self._put(row, file.name, chunks, file.content_type, kept, file.size_bytes)

    async def _put(
        self,
        row: DispatchRow,
        name: str,
        data: AsyncIterator[bytes] | bytes,
        content_type: str,
        kept: KeptResults,
        size_hint: int | None = None,
    ) -> None:
        key = join_key(artifact_prefix(row.tenant_id, row.id), name)
        try:
            self._space.check(size_hint if size_hint is not None else _known_size(data))
            info = await self._objects.put(key, data, content_type)
        except OutpostError as exc:
            kept.warnings.append(f"{name} was not stored: {exc.detail}")
            return
        kept.artifacts.append(self._row(row, name, info))

    def _row(self, row: DispatchRow, name: str, info: ObjectInfo) -> ArtifactRow:
        now = utc_now()
        return ArtifactRow(
            id=new_ulid(), tenant_id=row.tenant_id, dispatch_id=row.id, name=name, object_key=info.key,
            size_bytes=info.size_bytes, sha256=info.sha256, content_type=info.content_type,
            created_at=now, expires_at=now + self._retention,
        )  # fmt: skip

    async def _record(self, kept: KeptResults) -> None:
        """Rows for the stored objects; if they cannot be written, the objects go too (nothing would
        ever find or expire them)."""
        try:
            async with self._store.write() as conn:
                await artifact_repo.insert_artifacts(conn, kept.artifacts)
        except Exception:
            log.exception("artifact rows could not be written; deleting their objects")
            for artifact in kept.artifacts:
                await self._objects.delete(artifact.object_key)
            kept.warnings.append("the artifacts could not be recorded")
            kept.artifacts.clear()

    async def _event_log(self, dispatch_id: str) -> AsyncIterator[bytes]:
        """Every event recorded so far, one JSON object per line, read a page at a time."""
        after = 0
        while True:
            async with self._store.read() as conn:
                page = await event_repo.list_events(conn, dispatch_id, after, _EVENT_PAGE)
            if not page:
                return
            yield "".join(_event_line(event) for event in page).encode()
            after = page[-1].seq


def _event_line(event: EventRow) -> str:
    fields = {"seq": event.seq, "created_at": event.created_at.isoformat(), "kind": event.kind,
              "data": event.data}  # fmt: skip
    return json.dumps(fields, ensure_ascii=False) + "\n"


def _changed_file(change: ChangedFile) -> dict[str, object]:
    """A changed file for JSON: `path` is printable (see `display_name`); a name that is not plain
    printable UTF-8 also comes as its exact bytes in base64."""
    entry: dict[str, object] = {
        "path": change.display_path, "kind": change.kind.value,
        "old_mode": f"{change.old_mode:06o}", "new_mode": f"{change.new_mode:06o}",
    }  # fmt: skip
    if change.display_path != change.path:
        entry["path_base64"] = base64.b64encode(change.path_bytes).decode("ascii")
    if change.old_path is not None:
        entry["old_path"] = display_name(change.old_path)
    return entry


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as file:  # noqa: ASYNC230 - each read runs in a thread below
        while chunk := await run_blocking(file.read, _CHUNK):
            yield chunk


def _known_size(data: AsyncIterator[bytes] | bytes) -> int:
    return len(data) if isinstance(data, bytes) else 0
