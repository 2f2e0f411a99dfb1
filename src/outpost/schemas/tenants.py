"""A tenant's policy: caps on its dispatches' limits, hosts added to its runs' egress allowlist, and
its monthly budget."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from outpost.schemas.dispatches import MAX_EGRESS_ENTRIES, DispatchLimits, EgressEntry
from outpost.schemas.keys import TenantRead

# The dispatch's `timeout_s` column is a 32-bit integer, and a tenant's cap can become a dispatch's timeout.
MAX_TIMEOUT_CAP_S = 2**31 - 1
MAX_MONTHLY_BUDGET_USD = 10_000_000
# A number of dollars: not a string, not a boolean, not NaN or infinite.
BudgetUsd = Annotated[float, Strict(), Field(ge=0, le=MAX_MONTHLY_BUDGET_USD, allow_inf_nan=False)]
MAX_CONCURRENCY_CAP = 100_000
# A whole number of dispatches: 0 would stop the tenant for good (remove its keys for that), so at least 1.
ConcurrencyCap = Annotated[int, Strict(), Field(ge=1, le=MAX_CONCURRENCY_CAP)]


class TenantLimits(DispatchLimits):
    """Caps on a tenant's dispatches, with the same bounds as a dispatch's own `limits`, plus `timeout_s`.

    A cap lowers the server's limit for this tenant and never raises it: one above the server's is stored
    but the server's still applies (the server's limits are settings, and may be raised later).
    """

    timeout_s: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_CAP_S)] | None = None


class TenantPolicyUpdate(BaseModel):
    """`PATCH /v1/tenants/{id}`: a merge patch (RFC 7396). A field left out is left alone and `null`
    clears it. In `limits`, each cap given is set and each given as `null` removed, the others kept;
    `egress_allow` replaces the whole list."""

    model_config = ConfigDict(extra="forbid")
    limits: TenantLimits | None = None
    egress_allow: Annotated[list[EgressEntry], Field(max_length=MAX_EGRESS_ENTRIES)] | None = None
    monthly_budget_usd: BudgetUsd | None = None
    """What the tenant may spend per calendar month (UTC), in dollars; `null` removes the budget."""
    max_concurrent_dispatches: ConcurrencyCap | None = None
    """How many of the tenant's dispatches may be provisioning or running at once (further ones wait
    queued, in order); `null` removes the cap."""

    def merged_limits(self, current: dict[str, float] | None) -> dict[str, float] | None:
        """The caps after this update; None when none is left."""
        if "limits" not in self.model_fields_set:
            return current
        if self.limits is None:
            return None
        merged = {**(current or {}), **self.limits.model_dump(exclude_unset=True)}
        kept = {name: value for name, value in merged.items() if value is not None}
        return kept or None

    def merged_egress_allow(self, current: list[str] | None) -> list[str] | None:
        """The egress hosts after this update; None when none is left."""
        if "egress_allow" not in self.model_fields_set:
            return current
        return self.egress_allow or None

    def merged_concurrency_cap(self, current: int | None) -> int | None:
        """The cap on dispatches at once after this update; None when there is none."""
        if "max_concurrent_dispatches" not in self.model_fields_set:
            return current
        return self.max_concurrent_dispatches

    def merged_monthly_budget(self, current: int | None) -> int | None:
        """The monthly budget after this update, in micro-USD; None when there is none."""
        if "monthly_budget_usd" not in self.model_fields_set:
            return current
        budget = self.monthly_budget_usd
        return round(budget * 1_000_000) if budget is not None else None


class TenantPolicyRead(TenantRead):
    """A tenant with its policy: `limits` as stored (each cap applies only where it is below the
    server's), and the hosts its runs may reach besides the server's and each dispatch's own."""

    limits: TenantLimits | None
    egress_allow: list[str]
    monthly_budget_usd: float | None = None
    """What the tenant may spend per calendar month (UTC); `null`: no budget."""
    max_concurrent_dispatches: int | None = None
    """How many of its dispatches may be provisioning or running at once; `null`: no cap."""
