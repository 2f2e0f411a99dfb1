"""Persistent workspaces for API clients: chosen at submit, listed, deleted; sized after each run.

A workspace is in use while a dispatch that is not terminal holds it. Holding is recorded at submit, in
the dispatch's own transaction, and needs no release: once the holding dispatch has ended, however it
ended (a crash included), the workspace is free again.
"""

from __future__ import annotations

from dataclasses import replace

from outpost.audit import entries as audit_entries
from outpost.audit.log import AuditLog
from outpost.db.repositories import workspaces as workspace_repo
from outpost.db.repositories.workspaces import WorkspaceRow
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.domain.ids import is_ulid, new_ulid
from outpost.errors import Conflict, InvalidInput, NotFound
from outpost.services.keys import Principal
from outpost.worker.persistent import PersistentStore
from outpost.workspaces.settings import WorkspaceSettings


async def hold_for_dispatch(
    conn: Connection, tenant_id: str, name: str, dispatch_id: str, repo_url: str | None, quota_bytes: int
) -> tuple[WorkspaceRow, bool]:
    """Inside the submit transaction: the tenant's workspace `name` (created on first use), now held by
    `dispatch_id`, and whether this created it. Raises Conflict when another dispatch holds it or it was
    made from another repository, InvalidInput when the tenant's quota is used up."""
    row = await workspace_repo.get_by_name(conn, tenant_id, name)
    created = row is None
    if row is None:
        now = utc_now()
        row = WorkspaceRow(new_ulid(), tenant_id, name, repo_url, 0, None, now, now)
        await workspace_repo.insert_workspace(conn, row)
    elif repo_url is not None and row.repo_url != repo_url:
        made_from = row.repo_url or "no repository"
        raise Conflict(f"workspace {name!r} was made from {made_from}, not {repo_url}")
    if await workspace_repo.used_bytes(conn, tenant_id) >= quota_bytes:
        raise InvalidInput(
            f"the tenant's persistent workspaces use all of its {quota_bytes} bytes; delete one first",
            field="workspace",
        )
    if not await workspace_repo.claim(conn, row.id, dispatch_id, utc_now()):
        raise Conflict(f"workspace {name!r} is in use by dispatch {row.busy_dispatch_id}; wait for it to end")
    return row, created


class WorkspaceService:
    def __init__(
        self, store: Store, persistent: PersistentStore, settings: WorkspaceSettings, audit: AuditLog
    ) -> None:
        self._store = store
        self._audit = audit
        self.persistent = persistent
        self.settings = settings

    async def list(self, caller: Principal) -> tuple[list[WorkspaceRow], int]:
        """The tenant's workspaces (`busy_dispatch_id` only while that dispatch runs) and bytes used."""
        async with self._store.read() as conn:
            rows = await workspace_repo.list_for_tenant(conn, caller.tenant_id)
            busy = await workspace_repo.still_busy(conn, [row.id for row in rows])
        shown = [row if row.id in busy else _idle(row) for row in rows]
        return shown, sum(row.size_bytes for row in rows)

    async def delete(self, caller: Principal, workspace_id: str) -> None:
        """Raises NotFound (unknown, or another tenant's), Conflict while a dispatch holds it."""
        async with self._store.write() as conn:
            row = (
                await workspace_repo.get_workspace(conn, workspace_id, caller.tenant_id)
                if is_ulid(workspace_id)
                else None
            )
            if row is None:
                raise NotFound(f"no workspace {workspace_id!r}")
            if not await workspace_repo.delete_if_idle(conn, row.id, caller.tenant_id):
                raise Conflict(f"workspace {row.name!r} is in use by dispatch {row.busy_dispatch_id}")
            await self._audit.append(conn, audit_entries.workspace_deleted(row, caller.origin))
        await self.persistent.remove(row.tenant_id, row.id)

    async def record_size(self, workspace_id: str, size_bytes: int) -> None:
        async with self._store.write() as conn:
            await workspace_repo.set_size(conn, workspace_id, size_bytes)

    async def room_for(self, tenant_id: str, workspace_id: str) -> int:
        """Bytes a run in this workspace may fill: the quota less the tenant's other workspaces."""
        async with self._store.read() as conn:
            rows = await workspace_repo.list_for_tenant(conn, tenant_id)
        others = sum(row.size_bytes for row in rows if row.id != workspace_id)
        return max(0, self.settings.quota_bytes - others)


def _idle(row: WorkspaceRow) -> WorkspaceRow:
    return replace(row, busy_dispatch_id=None)
