"""`GET /v1/usage`: tokens, compute, storage and dollars from the ledger, by group."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

GroupBy = Literal["agent", "model", "day", "tenant"]


class UsageAmounts(BaseModel):
    """Sums of ledger rows. Dollars are exact sums of rows, each rounded to the micro-dollar once."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    vcpu_seconds: float
    """CPU time of the dispatches' sandboxes."""
    memory_gb_seconds: float
    """Memory held by the dispatches' sandboxes over time (GB of 2^30 bytes)."""
    storage_gb_hours: float
    """Persistent workspaces and artifacts held over time."""
    tokens_usd: float
    compute_usd: float
    storage_usd: float
    cost_usd: float


class UsageGroup(UsageAmounts):
    key: str | None = Field(
        description="The group: an agent, a model, a UTC day (YYYY-MM-DD) or a tenant id. null holds the "
        "rows without one: compute and storage have no model, storage no agent."
    )
    name: str | None = Field(default=None, description="The tenant's name, when grouped by tenant.")


class UsageReport(BaseModel):
    group_by: GroupBy
    since: date | None
    until: date | None
    """Both UTC days, inclusive: rows charged from `since` 00:00 to the end of `until`."""
    prices: str
    """The version of the price table in force now (each ledger row keeps the one it was priced with)."""
    groups: list[UsageGroup]
    total: UsageAmounts
