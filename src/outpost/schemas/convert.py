"""Rows → public shapes."""

from __future__ import annotations

from typing import Literal

from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.repositories.tenants import ApiKeyRow, TenantRow
from outpost.domain.dispatch import AgentName, DispatchStatus, FailureReason, Tier
from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.schemas.artifacts import ArtifactRead
from outpost.schemas.dispatches import (
    DispatchLimits,
    DispatchRead,
    EventRead,
    Failure,
    PushSpec,
    RepoSpec,
    Usage,
    WorkspaceSpec,
)
from outpost.schemas.failover import account_taken, requested_failover
from outpost.schemas.keys import KeyRead
from outpost.schemas.tenants import TenantLimits, TenantPolicyRead


def dispatch_read(row: DispatchRow, artifacts: list[ArtifactRead] | None = None) -> DispatchRead:
    failure = None
    if row.failure_reason is not None:
        failure = Failure(reason=FailureReason(row.failure_reason), detail=row.failure_detail)
    return DispatchRead(
        id=row.id, status=DispatchStatus(row.status), agent=AgentName(row.agent), task=row.task,
        model=row.model, tier=Tier(row.tier), attempt=row.attempt, timeout_s=row.timeout_s,
        labels=row.labels, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, exit_code=row.exit_code, result=row.result, failure=failure,
        usage=Usage(
            input_tokens=row.input_tokens, output_tokens=row.output_tokens,
            cache_read_tokens=row.cache_read_tokens, cache_write_tokens=row.cache_write_tokens,
        ),
        cost_usd=row.cost_micro_usd / 1_000_000,
        cli_cost_usd=None if row.cli_cost_micro_usd is None else row.cli_cost_micro_usd / 1_000_000,
        max_cost_usd=None if row.max_cost_micro_usd is None else row.max_cost_micro_usd / 1_000_000,
        limits=DispatchLimits.model_validate(row.limits) if row.limits else None,
        egress_allow=row.egress_allow or [],
        repo=RepoSpec.model_validate(row.repo) if row.repo else None, base_commit=row.base_commit,
        workspace=(
            WorkspaceSpec(mode="persistent", name=row.workspace_name) if row.workspace_name
            else WorkspaceSpec()
        ),
        push=PushSpec(branch=row.push_branch) if row.push_branch else None,
        failover=requested_failover(row.failover), failover_account=_failover_account(row),
        **_queue_fields(row),
        artifacts=artifacts or [],
    )  # fmt: skip


def _failover_account(row: DispatchRow) -> Literal["server"] | None:
    """`server` while a claim has the dispatch on the server's key (`failover.accounts`)."""
    return "server" if account_taken(row.failover) == SERVER_ACCOUNT else None


def _queue_fields(row: DispatchRow) -> dict[str, object]:
    """Why a queued dispatch waits; nothing once a worker took it (the claim clears both anyway)."""
    if row.status != DispatchStatus.QUEUED:
        return {}
    return {"queue_reason": row.queue_reason, "not_before": row.not_before}


def event_read(row: EventRow) -> EventRead:
    return EventRead(seq=row.seq, created_at=row.created_at, kind=row.kind, data=row.data)


def key_read(row: ApiKeyRow) -> KeyRead:
    return KeyRead(
        id=row.id, tenant_id=row.tenant_id, prefix=f"op_{row.prefix}", name=row.name, admin=row.is_admin,
        created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
    )  # fmt: skip


def tenant_policy_read(row: TenantRow) -> TenantPolicyRead:
    return TenantPolicyRead(
        id=row.id, name=row.name, created_at=row.created_at,
        limits=TenantLimits.model_validate(row.limits) if row.limits else None,
        egress_allow=row.egress_allow or [],
        monthly_budget_usd=(
            None if row.monthly_budget_micro_usd is None else row.monthly_budget_micro_usd / 1_000_000
        ),
        max_concurrent_dispatches=row.max_concurrent_dispatches,
    )  # fmt: skip
