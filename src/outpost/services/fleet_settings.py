"""Settings of the fleet's health report (`OUTPOST_FLEET__*`): what makes the fleet degraded. When a worker
counts as lost is the workers' own setting (`OUTPOST_WORKER__STALE_S`), which also hands its dispatches on."""

from __future__ import annotations

from pydantic import BaseModel, Field

WORKER_STALE_S = 30.0
"""Default silence after which a worker that has not stopped is presumed lost (`WorkerSettings.stale_s`):
six missed heartbeats at the workers' default interval of 5 s."""


class FleetSettings(BaseModel):
    """Thresholds of `GET /health/fleet` and of the fleet's Prometheus series."""

    queue_wait_s: float = Field(default=600.0, gt=0)
    """The fleet is degraded when a dispatch waiting for a worker (not held back by its tenant's cap or
    its provider's quota) has been queued for longer than this."""
    success_rate_min: float = Field(default=0.8, ge=0, le=1)
    """The fleet is degraded when an agent's success rate over the last hour (succeeded out of succeeded
    and failed) is below this ..."""
    success_rate_min_samples: int = Field(default=20, ge=1)
    """... over at least this many dispatches (fewer say little about the agent)."""
    cache_s: float = Field(default=1.0, ge=0, le=60)
    """How long a computed report is served before it is computed again (one computation at a time,
    whoever asks); the report's `as_of` says when it was computed. 0: every request computes it."""
