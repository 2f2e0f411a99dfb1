"""The audit log as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditRead(BaseModel):
    """One row of the audit log, with the hashes that chain it (an export can be checked offline)."""

    seq: int
    created_at: datetime
    tenant_id: str | None = Field(description="The tenant acted on; null for failed authentications.")
    actor: str | None = Field(description="`key:<id>`, `prefix:op_<prefix>` (a refused key), `worker`, …")
    action: str
    target: str | None
    detail: dict[str, Any]
    source_ip: str | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditRead]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last.")
