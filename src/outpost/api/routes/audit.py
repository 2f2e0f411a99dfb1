"""`/v1/audit`: the audit log, a tenant's own rows or (admin keys) everyone's."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from outpost.api.auth import CallerDep, ContainerDep
from outpost.schemas.audit import AuditPage, AuditRead

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage)
async def list_audit(
    *,
    caller: CallerDep,
    container: ContainerDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> AuditPage:
    """Rows after seq `after`, oldest first. `tenant` (admin keys) narrows to one tenant's rows."""
    rows, next_after = await container.audit.list_page(caller, after=after, limit=limit, tenant_id=tenant)
    return AuditPage(items=[AuditRead(**asdict(row)) for row in rows], next_after=next_after)
