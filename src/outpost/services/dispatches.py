"""Dispatch use cases for API clients: submit, read, list, cancel, and page through events."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from sqlalchemy.exc import IntegrityError

from outpost.agents.catalog import default_catalog, resolve_model
from outpost.agents.registry import AgentRegistry
from outpost.audit.entries import dispatch_cancelled, dispatch_submitted
from outpost.audit.log import AuditLog
from outpost.db.repositories import artifacts as artifact_repo
from outpost.db.repositories import dispatches as repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories import tenants as tenant_repo
from outpost.db.repositories.artifacts import ArtifactRow
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.repositories.workspaces import WorkspaceRow
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.domain.dispatch import DispatchStatus, Tier
from outpost.domain.ids import is_ulid, new_ulid
from outpost.domain.limits import EffectiveLimits, ServerLimits, resolve_limits
from outpost.errors import Conflict, InvalidInput, NotFound
from outpost.events.base import EventBus
from outpost.ledger.settlement import Ledger
from outpost.schemas.dispatches import DispatchCreate
from outpost.services.budgets import BudgetGuard
from outpost.services.failover import stored_failover
from outpost.services.keys import Principal
from outpost.services.lifecycle import event_notice, transition
from outpost.services.workspaces import hold_for_dispatch
from outpost.settings import LimitSettings, SandboxSettings
from outpost.worker.queue.base import DispatchQueue
from outpost.workspaces.push import check_push_branch
from outpost.workspaces.refs import check_ref
from outpost.workspaces.repo_url import parse_repo_url
from outpost.workspaces.settings import GitSettings

MAX_PAGE = 200
_CANCEL_RETRIES = 20


@dataclass(frozen=True, slots=True)
class Submitted:
    dispatch: DispatchRow
    created: bool


class DispatchService:
    def __init__(
        self,
        store: Store,
        queue: DispatchQueue,
        agents: AgentRegistry,
        limits: LimitSettings,
        abort_grace_s: float,
        sandbox: SandboxSettings,
        git: GitSettings,
        workspace_quota_bytes: int,
        bus: EventBus,
        ledger: Ledger,
        budgets: BudgetGuard | None = None,
        *,
        audit: AuditLog,
    ) -> None:
        self._store = store
        self._audit = audit
        self._budgets = budgets
        self._bus = bus
        self._ledger = ledger
        self._git = git
        self._workspace_quota = workspace_quota_bytes
        self._queue = queue
        self._agents = agents
        self._limits = limits
        self._abort_grace_s = abort_grace_s
        self._server_limits = ServerLimits(
            sandbox={
                "memory_mb": sandbox.memory_mb,
                "pids": sandbox.pids_max,
                "cpu_cores": sandbox.cpu_cores,
                "disk_mb": sandbox.disk_mb,
            },
            max_timeout_s=limits.max_timeout_s,
            default_timeout_s=limits.default_timeout_s,
        )

    async def submit(
        self, caller: Principal, request: DispatchCreate, idempotency_key: str | None
    ) -> Submitted:
        """Store a queued dispatch and queue it, in one transaction.

        With an idempotency key, a repeat of the same request returns the first dispatch; a different
        request under a used key raises Conflict. Raises InvalidInput for requests over the server's
        limits or the tenant's caps, BudgetExceeded when the tenant's monthly budget is spent or what
        remains of it is less than the request's `max_cost_usd` (a replay is answered all the same).
        The limits the dispatch runs with (the tenant's caps fill in what the request leaves out) are
        stored with it, so the run uses them and reads show them.
        """
        request_sha256 = _request_digest(request)
        try:
            async with self._store.write() as conn:
                # Checked in the transaction that stores it: one round trip to the database the less.
                effective = await self._check_request(conn, caller, request)
                row = self._new_row(caller, request, effective, idempotency_key, request_sha256)
                if idempotency_key is not None:
                    earlier = await repo.get_by_idempotency_key(conn, caller.tenant_id, idempotency_key)
                    if earlier is not None:
                        return Submitted(_replayed(earlier, request_sha256), created=False)
                if self._budgets is not None:
                    await self._budgets.admit(conn, caller.tenant_id, row.max_cost_micro_usd)
                new_workspace = None
                if request.workspace.mode == "persistent":
                    row, new_workspace = await self._with_workspace(conn, row, request.workspace.name or "")
                await repo.insert_dispatch(conn, row)
                queued = EventRow(row.id, 1, row.created_at, "status", {"status": "queued", "attempt": 0})
                await event_repo.insert_events(conn, [queued])
                await self._queue.enqueue(conn, row.id)
                await self._audit.append(conn, *dispatch_submitted(row, new_workspace, caller.origin))
        except IntegrityError:
            # Two requests with the same new idempotency key raced, or created the same persistent
            # workspace; the other one committed first.
            if idempotency_key is None:
                if request.workspace.mode == "persistent":
                    raise Conflict(
                        f"workspace {request.workspace.name!r} was just created by another dispatch; "
                        "try again"
                    ) from None
                raise
            async with self._store.read() as conn:
                earlier = await repo.get_by_idempotency_key(conn, caller.tenant_id, idempotency_key)
            if earlier is None:
                raise
            return Submitted(_replayed(earlier, request_sha256), created=False)
        self._queue.wake()
        self._bus.publish([event_notice(row)])
        return Submitted(row, created=True)

    async def get(self, caller: Principal, dispatch_id: str) -> DispatchRow:
        """Raises NotFound for unknown ids and for other tenants' dispatches alike."""
        return (await self.get_with_artifacts(caller, dispatch_id, with_artifacts=False))[0]

    async def get_with_artifacts(
        self, caller: Principal, dispatch_id: str, *, with_artifacts: bool = True
    ) -> tuple[DispatchRow, list[ArtifactRow]]:
        """The dispatch and, once it has ended, its artifacts, in one read (the hottest API call).
        Artifacts are stored just before the terminal event: one that has not ended has none to read.
        Raises NotFound for unknown ids and for other tenants' dispatches alike."""
        stored: list[ArtifactRow] = []
        async with self._store.read() as conn:
            row = (
                await repo.get_dispatch(conn, dispatch_id, caller.tenant_id) if is_ulid(dispatch_id) else None
            )
            if row is not None and with_artifacts and DispatchStatus(row.status).is_terminal:
                stored = await artifact_repo.list_for_dispatch(conn, row.id)
        if row is None:
            raise NotFound(f"no dispatch {dispatch_id!r}")
        return row, stored

    async def list_page(
        self, caller: Principal, *, limit: int, cursor: str | None, status: str | None, agent: str | None
    ) -> tuple[list[DispatchRow], str | None]:
        """A page, newest first, and the cursor of the next page (None on the last page)."""
        if cursor is not None and not is_ulid(cursor):
            raise InvalidInput("cursor is not one this server issued", field="cursor")
        async with self._store.read() as conn:
            rows = await repo.list_page(
                conn, caller.tenant_id, limit=limit + 1, before_id=cursor, status=status, agent=agent
            )
        next_cursor = rows[limit - 1].id if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def cancel(self, caller: Principal, dispatch_id: str) -> DispatchRow:
        """Cancel a queued or running dispatch; a dispatch that has ended is returned unchanged.

        A running dispatch is stopped by its worker, which records its last output and then the
        `cancelled` event; if the worker does not answer within the grace time, the dispatch is marked
        cancelled here.
        """
        row = await self.get(caller, dispatch_id)
        was_active = DispatchStatus(row.status).is_active  # only then is the cancel audited
        if was_active and await self._queue.request_abort(row.id):
            await self._queue.wait_stopped(row.id, self._abort_grace_s)
        for _ in range(_CANCEL_RETRIES):
            async with self._store.write() as conn:
                current = await repo.get_dispatch(conn, row.id)
                if current is None or DispatchStatus(current.status).is_terminal:
                    if current is not None and was_active:  # the worker stopped it for this cancel
                        await self._audit.append(conn, dispatch_cancelled(current, caller.origin))
                    return current or row
                updated = await transition(conn, current, DispatchStatus.CANCELLED)
                settled = await self._ledger.settle(conn, updated) if updated is not None else None
                if settled is not None:
                    await self._audit.append(conn, dispatch_cancelled(settled.dispatch, caller.origin))
            if settled is not None:
                self._ledger.published([settled])
                self._bus.publish([event_notice(settled.dispatch)])
                await self._queue.request_abort(row.id)
                return settled.dispatch
        raise Conflict(f"dispatch {dispatch_id} kept changing while it was being cancelled; try again")

    async def events(self, caller: Principal, dispatch_id: str, after_seq: int, limit: int) -> list[EventRow]:
        await self.get(caller, dispatch_id)
        async with self._store.read() as conn:
            return await event_repo.list_events(conn, dispatch_id, after_seq, limit)

    async def _check_request(
        self, conn: Connection, caller: Principal, request: DispatchCreate
    ) -> EffectiveLimits:
        """The limits the dispatch runs with. Raises InvalidInput for the first field the server or the
        tenant does not accept."""
        if len(request.task) > self._limits.max_task_chars:
            raise InvalidInput(f"task is longer than {self._limits.max_task_chars} characters", field="task")
        effective = resolve_limits(
            self._server_limits,
            await _tenant_caps(conn, caller.tenant_id),
            request.limits.model_dump(exclude_none=True) if request.limits else {},
            request.timeout_s,
        )
        self._agents.check_available(request.agent)
        return effective

    async def _with_workspace(
        self, conn: Connection, row: DispatchRow, name: str
    ) -> tuple[DispatchRow, WorkspaceRow | None]:
        """`row` holding the tenant's persistent workspace `name`, and the workspace if this made it; a
        workspace made from a repository keeps working on it when the request names none."""
        url = row.repo["url"] if row.repo else None
        held, created = await hold_for_dispatch(conn, row.tenant_id, name, row.id, url, self._workspace_quota)
        repo_spec = row.repo or ({"url": held.repo_url} if held.repo_url else None)
        row = replace(row, workspace_id=held.id, workspace_name=held.name, repo=repo_spec)
        return row, held if created else None

    def _checked_repo(self, request: DispatchCreate) -> dict[str, str] | None:
        """The repository as stored: its normalized URL and the ref (omitted: the default branch).
        Raises InvalidInput naming `repo.url` or `repo.ref`; the worker checks the host's addresses."""
        if request.repo is None:
            return None
        url = parse_repo_url(request.repo.url, self._git).url
        if request.repo.ref is None:
            return {"url": url}
        check_ref(request.repo.ref)
        return {"url": url, "ref": request.repo.ref}

    def _new_row(
        self,
        caller: Principal,
        request: DispatchCreate,
        effective: EffectiveLimits,
        idempotency_key: str | None,
        request_sha256: str,
    ) -> DispatchRow:
        max_cost = request.max_cost_usd
        return DispatchRow(
            id=new_ulid(), tenant_id=caller.tenant_id, status=DispatchStatus.QUEUED, version=1, attempt=0,
            event_seq=1, agent=request.agent, task=request.task, tier=request.tier or Tier.BALANCED,
            model=_model_in_force(request), timeout_s=effective.timeout_s,
            env=request.env, labels=request.labels,
            max_cost_micro_usd=round(max_cost * 1_000_000) if max_cost is not None else None,
            limits=effective.sandbox or None, repo=self._checked_repo(request),
            push_branch=check_push_branch(request.push.branch, self._git) if request.push else None,
            egress_allow=request.egress_allow or None,
            failover=stored_failover(
                default_catalog(), request.agent, request.tier, request.model, request.failover
            ),
            idempotency_key=idempotency_key, request_sha256=request_sha256, created_at=utc_now(),
            started_at=None, finished_at=None, exit_code=None, result=None, failure_reason=None,
            failure_detail=None, input_tokens=0, output_tokens=0, cache_read_tokens=0,
            cache_write_tokens=0, cost_micro_usd=0,
        )  # fmt: skip


def _model_in_force(request: DispatchCreate) -> str | None:
    """The model the dispatch runs with: the one asked for, or its tier's (the API shows it). Raises
    InvalidInput for a model the agent cannot use."""
    choice = resolve_model(default_catalog(), request.agent, request.tier, request.model)
    return choice.model.id if choice else None


def _request_digest(request: DispatchCreate) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(earlier: DispatchRow, request_sha256: str) -> DispatchRow:
    if earlier.request_sha256 != request_sha256:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    return earlier


async def _tenant_caps(conn: Connection, tenant_id: str) -> dict[str, float]:
    """Read on every submit, not cached, so that an admin's change applies to the next dispatch."""
    tenant = await tenant_repo.get_tenant(conn, tenant_id)
    return (tenant.limits if tenant else None) or {}
