"""Retention sweeps against the real store (SQLite and PostgreSQL) and the filesystem object store:
expired artifacts and old events go, everything else stays, and a disk cap gives up the oldest artifacts
first. Artifact rows and objects are written directly, as a run's artifact writer would."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories import artifacts as artifact_repo
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories.artifacts import ArtifactRow
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.repositories.tenants import TenantRow, insert_tenant
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.sandbox import mounts
from outpost.services import retention
from outpost.services.retention import RetentionJanitor, SweepReport
from outpost.services.retention_settings import RetentionSettings
from outpost.storage.base import ObjectNotFound
from outpost.storage.disk_guard import DiskGuard, measure_usage
from outpost.storage.filesystem import FilesystemObjectStore
from tests.conftest import MakeServer
from tests.requirements import require

KIB = 1024
DAY = timedelta(days=1)


@dataclass
class World:
    """A migrated store, an object store under a data dir, and one tenant."""

    store: Store
    objects: FilesystemObjectStore
    data_dir: Path
    tenant_id: str

    def janitor(self, **retention_settings: Any) -> RetentionJanitor:
        settings = RetentionSettings(**retention_settings)
        guard = DiskGuard(self.data_dir, settings)
        return RetentionJanitor(self.store, self.objects, guard, settings, self.data_dir)

    async def add_dispatch(self, status: str, finished_at: datetime | None, events: int) -> str:
        dispatch_id = new_ulid()
        created = (finished_at or utc_now()) - timedelta(minutes=5)
        async with self.store.write() as conn:
            await dispatch_repo.insert_dispatch(
                conn, _dispatch(dispatch_id, self.tenant_id, status, finished_at)
            )
            rows = [
                EventRow(dispatch_id, seq, created, "log", {"text": f"line {seq}"}) for seq in range(events)
            ]
            await event_repo.insert_events(conn, rows)
        return dispatch_id

    async def add_artifact(
        self, dispatch_id: str, created_at: datetime, expires_at: datetime, size_bytes: int = KIB
    ) -> ArtifactRow:
        name = f"file-{new_ulid().lower()}"
        content = os.urandom(size_bytes)
        row = ArtifactRow(
            id=new_ulid(), tenant_id=self.tenant_id, dispatch_id=dispatch_id, name=name,
            object_key=f"tenants/{self.tenant_id}/dispatches/{dispatch_id}/{name}", size_bytes=size_bytes,
            sha256=hashlib.sha256(content).hexdigest(), content_type="application/octet-stream",
            created_at=created_at, expires_at=expires_at,
        )  # fmt: skip
        await self.objects.put(row.object_key, content)
        async with self.store.write() as conn:
            await artifact_repo.insert_artifacts(conn, [row])
        return row

    async def artifact_ids(self) -> set[str]:
        async with self.store.read() as conn:
            return {row.id for row in await artifact_repo.list_oldest(conn, 10_000)}

    async def event_count(self, dispatch_id: str) -> int:
        async with self.store.read() as conn:
            return len(await event_repo.list_events(conn, dispatch_id, -1, 10_000))


def _dispatch(dispatch_id: str, tenant_id: str, status: str, finished_at: datetime | None) -> DispatchRow:
    created = (finished_at or utc_now()) - timedelta(minutes=5)
    return DispatchRow(
        id=dispatch_id, tenant_id=tenant_id, status=status, version=1, attempt=1, event_seq=0,
        agent="shell", task="true", tier="standard", model=None, timeout_s=60, env={}, labels={},
        max_cost_micro_usd=None, limits=None, egress_allow=None, idempotency_key=None, request_sha256=None,
        created_at=created, started_at=created, finished_at=finished_at, exit_code=None, result=None,
        failure_reason=None, failure_detail=None, input_tokens=0, output_tokens=0, cache_read_tokens=0,
        cache_write_tokens=0, cost_micro_usd=0,
    )  # fmt: skip


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    store = Store(database_url)
    await upgrade_to_head(store)
    data_dir = tmp_path / "data"  # the SQLite file is outside it: the cap tests count artifacts only
    data_dir.mkdir()
    tenant = TenantRow(id=new_ulid(), name="retention", created_at=utc_now())
    async with store.write() as conn:
        await insert_tenant(conn, tenant)
    try:
        yield World(store, FilesystemObjectStore(data_dir / "artifacts"), data_dir, tenant.id)
    finally:
        await store.dispose()


async def test_expired_artifacts_go_with_their_objects_and_unexpired_ones_stay(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "ARTIFACT_BATCH", 2)  # several batches out of a few rows
    now = utc_now()
    dispatch_id = await world.add_dispatch("succeeded", now - DAY, events=0)
    expired = [await world.add_artifact(dispatch_id, now - 40 * DAY, now - DAY * i) for i in (3, 2, 1)]
    gone_already = await world.add_artifact(dispatch_id, now - 40 * DAY, now - DAY)
    await world.objects.delete(gone_already.object_key)  # a missing object must not stop the sweep
    kept = [await world.add_artifact(dispatch_id, now - DAY, now + DAY * i) for i in (1, 2)]

    report = await world.janitor().sweep(now)

    assert report.artifacts_expired == 4
    assert await world.artifact_ids() == {row.id for row in kept}
    for row in expired:
        with pytest.raises(ObjectNotFound):
            await world.objects.stat(row.object_key)
    for row in kept:
        assert (await world.objects.stat(row.object_key)).size_bytes == row.size_bytes


async def test_events_of_dispatches_that_finished_long_ago_go_while_the_dispatches_stay(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "EVENT_BATCH", 3)
    now = utc_now()
    ids = {
        "old_succeeded": await world.add_dispatch("succeeded", now - 40 * DAY, events=5),
        "old_failed": await world.add_dispatch("failed", now - 31 * DAY, events=4),
        "recent": await world.add_dispatch("succeeded", now - 29 * DAY, events=2),
        "running": await world.add_dispatch("running", None, events=3),
        "queued": await world.add_dispatch("queued", None, events=1),
    }

    report = await world.janitor(event_days=30).sweep(now)

    assert report.events_deleted == 9
    counts = {name: await world.event_count(dispatch_id) for name, dispatch_id in ids.items()}
    assert counts == {"old_succeeded": 0, "old_failed": 0, "recent": 2, "running": 3, "queued": 1}
    async with world.store.read() as conn:
        for name in ("old_succeeded", "old_failed"):
            assert (await dispatch_repo.get_dispatch(conn, ids[name])) is not None
    assert (await world.janitor(event_days=30).sweep(now)).events_deleted == 0


async def test_over_the_cap_the_oldest_artifacts_go_first_until_the_data_dir_is_under_it(
    world: World,
) -> None:
    now = utc_now()
    dispatch_id = await world.add_dispatch("succeeded", now - DAY, events=0)
    rows = [
        await world.add_artifact(
            dispatch_id, now - DAY * (10 - i), now + DAY * (20 + i), size_bytes=512 * KIB
        )
        for i in range(5)
    ]  # oldest first: created and expiring in the same order
    cap = measure_usage(world.data_dir) - 600 * KIB  # two artifacts make up the excess, one does not

    janitor = world.janitor(disk_cap_bytes=cap)
    report = await janitor.sweep(now)

    assert (report.artifacts_evicted, report.bytes_evicted, report.artifacts_expired) == (2, 1024 * KIB, 0)
    assert await world.artifact_ids() == {row.id for row in rows[2:]}
    assert report.usage_bytes <= cap
    assert report.usage_bytes == measure_usage(world.data_dir)
    assert not janitor.status().over_cap
    assert (await janitor.sweep(now)).artifacts_evicted == 0  # under the cap: nothing more goes


async def test_under_the_cap_nothing_is_evicted_and_the_usage_is_recorded(world: World) -> None:
    now = utc_now()
    dispatch_id = await world.add_dispatch("succeeded", now - DAY, events=0)
    row = await world.add_artifact(dispatch_id, now - DAY, now + DAY, size_bytes=64 * KIB)
    janitor = world.janitor(disk_cap_bytes=measure_usage(world.data_dir) + 1024 * KIB)

    report = await janitor.sweep(now)

    assert (report.artifacts_evicted, report.bytes_evicted) == (0, 0)
    assert await world.artifact_ids() == {row.id}
    assert janitor.last_report == report
    status = janitor.status()
    assert (status.usage_bytes, status.over_cap) == (report.usage_bytes, False)


async def test_with_artifacts_kept_elsewhere_the_cap_deletes_nothing(world: World) -> None:
    now = utc_now()
    dispatch_id = await world.add_dispatch("succeeded", now - DAY, events=0)
    row = await world.add_artifact(dispatch_id, now - DAY, now + DAY, size_bytes=1024 * KIB)
    settings = RetentionSettings(disk_cap_bytes=1024 * KIB)
    guard = DiskGuard(world.data_dir, settings)
    janitor = RetentionJanitor(
        world.store, world.objects, guard, settings, world.data_dir, objects_in_data_dir=False
    )

    report = await janitor.sweep(now)

    assert report.artifacts_evicted == 0
    assert await world.artifact_ids() == {row.id}
    assert janitor.status().over_cap


def test_a_file_system_mounted_inside_the_data_dir_is_not_counted(tmp_path: Path) -> None:
    require(None if os.geteuid() == 0 else "mounting a tmpfs needs root")
    data_dir = tmp_path / "data"
    workspace = data_dir / "workspaces" / "run"
    workspace.mkdir(parents=True)
    before = measure_usage(data_dir)
    mounts.mount_tmpfs(workspace, size_bytes=16 * 1024 * KIB, inodes=64, uid=0, mode=0o700)
    try:
        (workspace / "big").write_bytes(b"x" * 4 * 1024 * KIB)
        assert measure_usage(data_dir) <= before  # the mount point's own folder is not counted either
    finally:
        mounts.unmount(workspace)
    (workspace / "big").write_bytes(b"x" * 4 * 1024 * KIB)  # the same file on the data dir's own disk
    assert measure_usage(data_dir) >= before + 4 * 1024 * KIB


async def test_a_failed_sweep_is_retried_at_the_next_interval(tmp_path: Path) -> None:
    settings = RetentionSettings(sweep_interval_s=1)
    janitor = RetentionJanitor(
        Store(f"sqlite:///{tmp_path / 'x.db'}"), FilesystemObjectStore(tmp_path / "objects"),
        DiskGuard(tmp_path, settings), settings, tmp_path,
    )  # fmt: skip
    calls: list[datetime] = []
    retried = asyncio.Event()

    async def flaky_sweep(now: datetime) -> SweepReport:
        calls.append(now)
        if len(calls) == 1:
            raise OSError("the disk hiccuped")
        retried.set()
        return SweepReport(now, now, 0, 0, 0, 0, 0)

    janitor.sweep = flaky_sweep  # type: ignore[method-assign]
    janitor.start()
    try:
        await asyncio.wait_for(retried.wait(), 5)
    finally:
        await janitor.stop()
    assert calls[1] - calls[0] >= timedelta(seconds=0.9)


async def test_ready_reports_the_storage_section(make_server: MakeServer) -> None:
    server = await make_server(limits={"requests_per_s": 0}, retention={"disk_cap_bytes": 1024**4})
    await server.container.janitor.sweep(utc_now())

    response = await server.client.get("/health/ready")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checks"]["storage"] == "ok"
    storage = body["storage"]
    assert storage["usage_bytes"] > 0
    assert (storage["cap_bytes"], storage["low_space"], storage["over_cap"]) == (1024**4, False, False)
    assert storage["free_bytes"] > storage["reserve_bytes"] > 0
    assert set(storage["last_sweep"]) == {
        "finished_at", "artifacts_expired", "events_deleted", "artifacts_evicted", "bytes_evicted",
    }  # fmt: skip


async def test_free_space_below_the_reserve_makes_the_server_unready(make_server: MakeServer) -> None:
    server = await make_server(limits={"requests_per_s": 0}, retention={"min_free_percent": 100})

    response = await server.client.get("/health/ready")

    assert response.status_code == 503, response.text
    body = response.json()
    assert "below the reserve" in body["checks"]["storage"]
    assert body["detail"].startswith("storage: only ")
    assert body["storage"]["low_space"] is True
    assert body["checks"]["store"] == "ok"


async def test_over_the_cap_alone_leaves_the_server_ready(make_server: MakeServer) -> None:
    server = await make_server(limits={"requests_per_s": 0}, retention={"disk_cap_bytes": 1024**2})
    (server.container.settings.data_dir / "filler").write_bytes(b"x" * 2 * 1024 * KIB)
    await server.container.janitor.sweep(utc_now())

    response = await server.client.get("/health/ready")

    assert response.status_code == 200, response.text
    assert response.json()["storage"]["over_cap"] is True
