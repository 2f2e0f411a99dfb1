"""Settings of the cost ledger (`OUTPOST_LEDGER__*`): compute and storage prices, how often a run's compute
is recorded, and storage accrual."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, field_validator

MIN_COMPUTE_SAMPLE_S = 0.1
Usd = Annotated[Decimal, Field(ge=0, le=1_000, allow_inf_nan=False, max_digits=20)]


class LedgerSettings(BaseModel):
    """What compute and storage cost, how often storage is charged and a run's compute recorded. Token
    prices are the model catalog's (`agents/catalog.toml`). A GB here is 2^30 bytes, a month 30 days."""

    vcpu_hour_usd: Usd = Decimal("0.04")
    """Price of one vCPU busy for an hour (CPU time as the run's cgroup counts it)."""
    gb_hour_usd: Usd = Decimal("0.004")
    """Price of one GB of memory held for an hour (the run's memory use sampled over its life)."""
    storage_gb_month_usd: Usd = Decimal("0.30")
    """Price of one GB of persistent workspaces and artifacts kept for a month."""
    storage_accrual_interval_s: float = Field(default=3600.0, ge=1, le=24 * 3600)
    """How often each tenant's held storage is charged. Every accrual adds one row per tenant holding
    anything; each row is rounded to the micro-dollar once, so shorter intervals add rows, not accuracy."""
    compute_sample_s: float = Field(default=30.0, ge=0, le=24 * 3600)
    """How often a running attempt records its compute so far (a `compute` event with `final: false`), so
    that a run whose worker is lost, or whose cancel is settled before the worker answers, is charged what
    it used up to its last sample. 0: only the final measurement, when the attempt ends. Each sample is one
    small event; at least 0.1 s."""

    @field_validator("compute_sample_s")
    @classmethod
    def _sampled_sparingly(cls, value: float) -> float:
        if 0 < value < MIN_COMPUTE_SAMPLE_S:
            raise ValueError(f"must be 0 (no samples) or at least {MIN_COMPUTE_SAMPLE_S} s")
        return value
