"""`GET /v1/usage`: the ledger summed by agent, model, UTC day or tenant."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter

from outpost.api.auth import CallerDep, ContainerDep
from outpost.schemas.usage import GroupBy, UsageReport

router = APIRouter(tags=["usage"])


@router.get("/v1/usage", response_model=UsageReport)
async def get_usage(
    caller: CallerDep,
    container: ContainerDep,
    group_by: GroupBy = "agent",
    since: date | None = None,
    until: date | None = None,
) -> UsageReport:
    """Tokens, compute, storage and dollars of the caller's tenant (an admin key: of every tenant), per
    group and in total, for the UTC days `since` to `until` inclusive. `group_by=tenant` needs an admin
    key (403 otherwise); an unknown `group_by` or a malformed date is a 422 problem."""
    return await container.usage.report(caller, group_by, since, until)
