"""`GET /health/fleet`: the workers, each agent's queue and last hour, and the fleet's overall status."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class FleetStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    """Work still gets done, but something needs a look (see `reasons`)."""
    UNHEALTHY = "unhealthy"
    """No worker is there to run dispatches."""


class WorkerState(StrEnum):
    LIVE = "live"
    """Beating, and taking work."""
    DRAINING = "draining"
    """Beating, but taking no new work: it finishes what it runs, then exits."""
    SILENT = "silent"
    """Not stopped, but it has not beaten within the stale threshold: presumed lost."""
    STOPPED = "stopped"
    """It exited, or was found dead (within the last hour; older ones are not listed)."""


BEATING = frozenset({WorkerState.LIVE, WorkerState.DRAINING})


class FleetReason(BaseModel):
    code: str = Field(
        description="Machine-readable: `no_live_worker`, `worker_silent`, `queue_wait`, "
        "`low_success_rate`, `agent_unserved`, `all_draining`, `slots_full`."
    )
    detail: str


class FleetWorker(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    """Outpost's version on that worker."""
    state: WorkerState
    slots: int
    """Dispatches it runs at once at most."""
    busy: int
    """Dispatches it was running at its last heartbeat."""
    agents: list[str]
    """The agents it can run."""
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    """Seconds from its last heartbeat to `as_of`."""
    stopped_at: datetime | None


class DurationPercentiles(BaseModel):
    """Seconds from start to end of the dispatches that ran to an outcome (succeeded, failed, timed out)
    in the last hour; linear interpolation between closest ranks."""

    p50: float
    p90: float
    p99: float


class FleetAgent(BaseModel):
    queued: int
    """Queued now, held ones included."""
    held: int
    """Of those, held back by their tenant's concurrency cap or their provider's quota."""
    running: int
    """Provisioning or running now."""
    succeeded: int
    """Finished in the last hour: succeeded."""
    failed: int
    """Finished in the last hour: failed or timed out."""
    cancelled: int
    """Finished in the last hour: cancelled."""
    success_rate: float | None
    """succeeded / (succeeded + failed); null when neither happened."""
    failures: dict[str, int]
    """`failed` by failure reason."""
    duration_s: DurationPercentiles | None
    """null when no dispatch of this agent ran to an outcome in the last hour."""
    oldest_queued_age_s: float | None
    """Age of the oldest queued dispatch waiting for a worker (not held); null when none waits."""


class FleetCapacity(BaseModel):
    """The workers taking work (state `live`)."""

    workers: int
    slots: int
    busy: int


class FleetHealth(BaseModel):
    status: FleetStatus
    reasons: list[FleetReason]
    """Why the fleet is not healthy; empty when it is."""
    as_of: datetime
    """When these figures were computed (they are served for up to `OUTPOST_FLEET__CACHE_S`)."""
    window_s: int
    """The span of the "last hour" figures, in seconds."""
    capacity: FleetCapacity
    workers: list[FleetWorker]
    """Workers not stopped, and those that stopped within the window; oldest first."""
    agents: dict[str, FleetAgent]
    """Every agent that a worker runs, or that has dispatches queued, running or finished in the window."""
