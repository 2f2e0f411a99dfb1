"""Retention: a periodic sweep that deletes expired artifacts and old events, and keeps the data dir under
its disk cap.

Each step runs in short transactions of its own (batches), so a sweep never holds SQLite's write lock
for long and a failure part-way loses nothing: the next sweep carries on where this one stopped. An
artifact's object is deleted before its row, so a crash between the two leaves a row whose object is
gone (deleted again, harmlessly, next time) rather than an object nothing points at.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from outpost.db.repositories import artifacts as artifact_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories.artifacts import ArtifactRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.errors import InvalidInput
from outpost.services.audit import AuditService
from outpost.services.periodic import Periodic
from outpost.services.retention_settings import RetentionSettings
from outpost.storage.base import ObjectStore
from outpost.storage.disk_guard import DiskGuard, DiskState, measure_usage

log = logging.getLogger(__name__)

ARTIFACT_BATCH = 100
"""Artifacts deleted per transaction (their objects first, some at once)."""
EVENT_BATCH = 1000
"""Events deleted per transaction."""
OBJECT_DELETES_AT_ONCE = 16
"""Object deletions in flight together: enough to hide an S3 round trip, few enough for its pool."""


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    started_at: datetime
    finished_at: datetime
    artifacts_expired: int
    """Artifacts deleted because they expired."""
    events_deleted: int
    """Events of dispatches that finished more than `event_days` ago."""
    artifacts_evicted: int
    """Artifacts deleted, before their expiry, to bring the data dir under its disk cap."""
    bytes_evicted: int
    """The evicted artifacts' summed size."""
    usage_bytes: int
    """The data dir's usage measured at the end of the sweep."""
    audit_rows_deleted: int = 0
    """Audit log rows older than `audit_days`."""


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """The data dir's space as `/health/ready` reports it."""

    disk: DiskState
    usage_bytes: int | None
    """As measured by the last sweep; None before the first."""
    cap_bytes: int | None
    over_cap: bool
    last_sweep: SweepReport | None


class RetentionJanitor:
    """Sweeps periodically between `start()` and `stop()`; `sweep()` runs one sweep on demand."""

    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        guard: DiskGuard,
        settings: RetentionSettings,
        data_dir: Path,
        *,
        objects_in_data_dir: bool = True,
        audit: AuditService | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._guard = guard
        self._settings = settings
        self._data_dir = data_dir
        # With a remote object store (S3), deleting artifacts frees nothing under the data dir: the cap
        # must not then delete every artifact in a vain attempt to get under it.
        self._objects_in_data_dir = objects_in_data_dir
        self._audit = audit  # None: the audit log is left alone (tests of the other steps)
        self._last: SweepReport | None = None
        self._loop = Periodic("retention sweep", lambda: self.sweep(utc_now()), settings.sweep_interval_s)

    @property
    def last_report(self) -> SweepReport | None:
        return self._last

    def status(self) -> StorageStatus:
        """Raises Unavailable when the data dir's file system cannot be queried."""
        cap, usage = self._settings.disk_cap_bytes, self._last.usage_bytes if self._last else None
        over = cap is not None and usage is not None and usage > cap
        return StorageStatus(self._guard.state(), usage, cap, over, self._last)

    async def sweep(self, now: datetime) -> SweepReport:
        """Delete expired artifacts, old events and old audit rows, then enforce the disk cap. Raises what
        the store or the object store raise (Unavailable); what was deleted before the error stays deleted."""
        expired = await self._delete_expired(now)
        events = await self._delete_old_events(now - timedelta(days=self._settings.event_days))
        audit_rows = await self._audit.prune(now) if self._audit else 0
        usage = await asyncio.to_thread(measure_usage, self._data_dir)
        evicted, freed = await self._enforce_cap(usage)
        if evicted:
            usage = await asyncio.to_thread(measure_usage, self._data_dir)
        report = SweepReport(now, utc_now(), expired, events, evicted, freed, usage, audit_rows)
        self._last = report
        if expired or events or evicted or audit_rows:
            log.info(
                "retention sweep deleted %d expired artifacts, %d events, %d audit rows and %d artifacts "
                "(%d bytes) over the disk cap; the data dir takes %d bytes",
                expired, events, audit_rows, evicted, freed, usage,
            )  # fmt: skip
        return report

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _delete_expired(self, now: datetime) -> int:
        deleted = 0
        while True:
            async with self._store.read() as conn:
                rows = await artifact_repo.list_expired(conn, now, ARTIFACT_BATCH)
            deleted += await self._delete_artifacts(rows)
            if len(rows) < ARTIFACT_BATCH:
                return deleted

    async def _delete_old_events(self, finished_before: datetime) -> int:
        deleted = 0
        while True:
            async with self._store.write() as conn:
                count = await event_repo.delete_events_of_finished(conn, finished_before, EVENT_BATCH)
            deleted += count
            if count < EVENT_BATCH:
                return deleted

    async def _enforce_cap(self, usage_bytes: int) -> tuple[int, int]:
        """Delete the oldest artifacts until their sizes make up the excess; (artifacts, bytes) deleted."""
        cap = self._settings.disk_cap_bytes
        if cap is None or usage_bytes <= cap:
            return 0, 0
        if not self._objects_in_data_dir:
            log.warning(
                "the data dir takes %d bytes, over its cap of %d bytes; artifacts are not kept in it, so "
                "deleting them would free nothing: free space by hand or raise the cap", usage_bytes, cap,
            )  # fmt: skip
            return 0, 0
        evicted = freed = 0
        while usage_bytes - freed > cap:
            async with self._store.read() as conn:
                oldest = await artifact_repo.list_oldest(conn, ARTIFACT_BATCH)
            chosen = enough_to_free(oldest, usage_bytes - freed - cap)
            if not chosen:
                break  # nothing left to delete: the rest of the data dir alone is over the cap
            evicted += await self._delete_artifacts(chosen)
            freed += sum(row.size_bytes for row in chosen)
        return evicted, freed

    async def _delete_artifacts(self, rows: list[ArtifactRow]) -> int:
        for start in range(0, len(rows), OBJECT_DELETES_AT_ONCE):
            group = rows[start : start + OBJECT_DELETES_AT_ONCE]
            await asyncio.gather(*(self._delete_object(row.object_key) for row in group))
        async with self._store.write() as conn:
            return await artifact_repo.delete_artifacts(conn, [row.id for row in rows])

    async def _delete_object(self, key: str) -> None:
        try:
            await self._objects.delete(key)  # a missing object is fine: delete is idempotent
        except InvalidInput:
            # No object can exist under a malformed key; keeping the row would fail every sweep.
            log.warning("artifact object key %r is malformed; deleting its row only", key)


def enough_to_free(rows: list[ArtifactRow], excess_bytes: int) -> list[ArtifactRow]:
    """The shortest head of `rows` whose sizes add up to `excess_bytes` (all of them if they fall short)."""
    chosen: list[ArtifactRow] = []
    total = 0
    for row in rows:
        if total >= excess_bytes:
            break
        chosen.append(row)
        total += row.size_bytes
    return chosen
